#!/usr/bin/env bash
# Shared by the master and minion provisioning: packages from the distribution, Kubernetes from
# its own package repository, ovnkube from this checkout.
set -euo pipefail

K8S_MINOR="${K8S_MINOR:-v1.33}"

install_packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" curl gpg apt-transport-https ca-certificates containerd
    mkdir -p /etc/containerd
    containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
    systemctl restart containerd
}

install_kubernetes() {
    local key=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
    mkdir -p /etc/apt/keyrings
    curl -fsSL "https://pkgs.k8s.io/core:/stable:/${K8S_MINOR}/deb/Release.key" | gpg --dearmor --yes -o "$key"
    echo "deb [signed-by=${key}] https://pkgs.k8s.io/core:/stable:/${K8S_MINOR}/deb/ /" > /etc/apt/sources.list.d/kubernetes.list
    apt-get update -qq
    apt-get install -y -qq kubelet kubeadm kubectl
    swapoff -a
    modprobe br_netfilter || true
    sysctl -w net.ipv4.ip_forward=1
}

# ovnkube built on the host (make release) is preferred; otherwise build it here.
install_ovnkube() {
    if [ ! -x /ovnkube/target/release/ovnkube ]; then
        apt-get install -y -qq build-essential
        curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
        (cd /ovnkube && cargo build --release --bins -p ovnkube)
    fi
    make -C /ovnkube install-bin
}
