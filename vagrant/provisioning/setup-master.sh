#!/usr/bin/env bash
# Master: OVN central (NB/SB/northd), the Kubernetes control plane (kubeadm, no kube-proxy:
# ovnkube serves services), and the ovnkube master started as the guide does.
set -euo pipefail
NODE_NAME="$1"
CENTRAL_IP="$2"
CLUSTER_IP_SUBNET="$3"
SERVICE_IP_SUBNET="$4"

# shellcheck source=common.sh
. /ovnkube/vagrant/provisioning/common.sh
install_packages ovn-central ovn-host openvswitch-switch
install_kubernetes
install_ovnkube

kubeadm init --apiserver-advertise-address="$CENTRAL_IP" --node-name="$NODE_NAME" \
    --service-cidr="$SERVICE_IP_SUBNET" --skip-phases=addon/kube-proxy
mkdir -p /home/vagrant/.kube
cp /etc/kubernetes/admin.conf /home/vagrant/.kube/config
chown -R vagrant: /home/vagrant/.kube
kubeadm token create --print-join-command > /ovnkube/vagrant/join-command.sh
cp /etc/kubernetes/admin.conf /ovnkube/vagrant/kubeconfig.yaml
cd /home/vagrant
cp /etc/kubernetes/admin.conf kubeconfig.yaml

# The central is the stock ovn-central service: NB and SB listen on their unix sockets in
# /var/run/ovn only. Nothing opens a TCP listener here: the master does, over those sockets,
# from its -nb-address/-sb-address (tests/readme.rs runs these same lines).
nohup sudo ovnkube -k8s-kubeconfig kubeconfig.yaml -net-controller -init-master="$NODE_NAME" -cluster-subnet="$CLUSTER_IP_SUBNET" -service-cluster-ip-range="$SERVICE_IP_SUBNET" -nodeport -nb-address=tcp://"$CENTRAL_IP":6631 -sb-address=tcp://"$CENTRAL_IP":6632 -loglevel=4 -logfile=/var/log/openvswitch/ovnkube.log 2>&1 &

# The minions connect to those listeners: fail the provisioning here, with the master's log,
# if they did not come up.
listening() {
    ovn-nbctl --timeout=5 get-connection | grep -q "ptcp:6631:$CENTRAL_IP" &&
        ovn-sbctl --timeout=5 get-connection | grep -q "ptcp:6632:$CENTRAL_IP"
}
for _ in $(seq 60); do
    listening && break
    sleep 2
done
if ! listening; then
    echo "ovnkube master did not open the NB/SB listeners on $CENTRAL_IP:6631/6632" >&2
    tail -n 50 /var/log/openvswitch/ovnkube.log >&2 || true
    exit 1
fi

# The guide's sample workloads, for `kubectl create -f`.
cp /ovnkube/vagrant/manifests/*.yaml /home/vagrant/
