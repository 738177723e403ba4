#!/usr/bin/env bash
# Every VM resolves the others' short names to their overlay IPs: ovnkube uses the node name's
# address as the encapsulation IP.
set -euo pipefail
for pair in "$@"; do
    ip="${pair%%=*}"
    name="${pair#*=}"
    grep -qE "^${ip}[[:space:]]+${name}\$" /etc/hosts || echo "${ip} ${name}" >> /etc/hosts
done
