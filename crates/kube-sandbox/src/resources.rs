//! Static table of the resource types the sandbox serves.

/// How a list field merges under a strategic-merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch list replaces the live list (the default for lists without a patch strategy).
    Replace,
    /// Elements are maps merged by the value of this key.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set union (e.g. `metadata.finalizers`).
    MergePrimitive,
}

/// One served resource type.
#[derive(Debug)]
pub struct ResourceDef {
    /// API group, "" for core.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name used in URLs.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether a `/status` subresource exists.
    pub has_status: bool,
    /// Whether PUT on a missing object creates it (as the real registry does for these types).
    pub create_on_update: bool,
    /// Field-selector fields accepted besides metadata.name / metadata.namespace.
    pub extra_fields: &'static [&'static str],
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `networkpolicies.networking.k8s.io`, as used in Status messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether the object name must be a DNS-1123 label (namespaces) or DNS-1035 label (services)
    /// instead of a DNS-1123 subdomain.
    pub fn name_rule(&self) -> NameRule {
        match (self.group, self.plural) {
            ("", "namespaces") => NameRule::Label1123,
            ("", "services") => NameRule::Label1035,
            _ => NameRule::Subdomain,
        }
    }

    /// Strategic-merge list strategy for a list stored under `field` of an object of this kind.
    pub fn list_strategy(&self, field: &str) -> ListStrategy {
        match field {
            "finalizers" => return ListStrategy::MergePrimitive,
            "ownerReferences" => return ListStrategy::MergeByKey("uid"),
            _ => {}
        }
        match (self.kind, field) {
            (
                "Pod",
                "containers"
                | "initContainers"
                | "ephemeralContainers"
                | "env"
                | "volumes"
                | "imagePullSecrets",
            ) => ListStrategy::MergeByKey("name"),
            ("Pod", "ports") => ListStrategy::MergeByKey("containerPort"),
            ("Pod", "volumeMounts") => ListStrategy::MergeByKey("mountPath"),
            ("Pod", "volumeDevices") => ListStrategy::MergeByKey("devicePath"),
            ("Pod", "podIPs" | "hostIPs" | "hostAliases") => ListStrategy::MergeByKey("ip"),
            ("Pod" | "Node", "conditions") => ListStrategy::MergeByKey("type"),
            ("Node", "addresses") => ListStrategy::MergeByKey("type"),
            ("Service", "ports") => ListStrategy::MergeByKey("port"),
            _ => ListStrategy::Replace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label1123,
    Label1035,
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every served resource. Index into this table is the store's resource id.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        has_status: true,
        create_on_update: false,
        extra_fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        has_status: true,
        create_on_update: true,
        extra_fields: &["spec.clusterIP", "spec.type"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: NONE,
        has_status: false,
        create_on_update: true,
        extra_fields: &[],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: NONE,
        has_status: true,
        create_on_update: false,
        extra_fields: &["spec.unschedulable"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: NONE,
        has_status: true,
        create_on_update: false,
        extra_fields: &["status.phase"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: NONE,
        has_status: false,
        create_on_update: true,
        extra_fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    ResourceDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        categories: NONE,
        has_status: false,
        create_on_update: false,
        extra_fields: &[],
    },
    ResourceDef {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: NONE,
        categories: NONE,
        has_status: false,
        create_on_update: false,
        extra_fields: &["addressType"],
    },
    ResourceDef {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: NONE,
        categories: NONE,
        has_status: false,
        create_on_update: true,
        extra_fields: &[],
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: NONE,
        has_status: false,
        create_on_update: true,
        extra_fields: &[
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "reason",
            "type",
        ],
    },
];

/// Resource id of `namespaces` (used for namespace existence checks and cascading deletes).
pub const NAMESPACES: usize = 4;
/// Resource id of `services` (used for IP / node-port allocation).
pub const SERVICES: usize = 1;
/// Resource ids of `endpoints` and `endpointslices` (EndpointSlice mirroring).
pub const ENDPOINTS: usize = 2;
pub const ENDPOINTSLICES: usize = 7;

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The (group, version) pairs served, in discovery order; core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ids_match_table() {
        assert_eq!(RESOURCES[NAMESPACES].plural, "namespaces");
        assert_eq!(RESOURCES[SERVICES].plural, "services");
        assert_eq!(RESOURCES[ENDPOINTS].plural, "endpoints");
        assert_eq!(RESOURCES[ENDPOINTSLICES].plural, "endpointslices");
        assert_eq!(find("networking.k8s.io", "v1", "networkpolicies"), Some(6));
    }
}
