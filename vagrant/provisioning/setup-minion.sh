#!/usr/bin/env bash
# Minion: kubelet, ovn-controller, and the ovnkube node with a shared gateway on the public NIC,
# started as the guide does.
set -euo pipefail
NODE_NAME="$1"
NODE_IP="$2"
CENTRAL_IP="$3"
CLUSTER_IP_SUBNET="$4"
SERVICE_IP_SUBNET="$5"
GATEWAY_INTERFACE="$6"
NEXTHOP="$7"

# shellcheck source=common.sh
. /ovnkube/vagrant/provisioning/common.sh
install_packages ovn-host openvswitch-switch
install_kubernetes
install_ovnkube

ovs-vsctl set Open_vSwitch . external_ids:system-id="$NODE_NAME" external_ids:ovn-encap-ip="$NODE_IP"
bash /ovnkube/vagrant/join-command.sh --node-name "$NODE_NAME"
cd /home/vagrant
cp /ovnkube/vagrant/kubeconfig.yaml kubeconfig.yaml
TOKEN="$(kubectl --kubeconfig kubeconfig.yaml -n kube-system create token default)"

nohup sudo ovnkube -k8s-kubeconfig kubeconfig.yaml -init-node="$NODE_NAME" -init-gateways -gateway-interface="$GATEWAY_INTERFACE" -gateway-nexthop="$NEXTHOP" -nodeport -nb-address=tcp://"$CENTRAL_IP":6631 -sb-address=tcp://"$CENTRAL_IP":6632 -k8s-token="$TOKEN" -cluster-subnet="$CLUSTER_IP_SUBNET" -service-cluster-ip-range="$SERVICE_IP_SUBNET" -loglevel=4 -logfile=/var/log/openvswitch/ovnkube.log 2>&1 &
