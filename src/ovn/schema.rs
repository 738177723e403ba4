//! Table and column names of the OVN northbound and Open vSwitch schemas that ovnkube reads or
//! writes: the one place they are spelled, so a typo is a compile error and a reader can find
//! every user of a column.

/// Northbound tables.
pub mod nb {
    pub const DB: &str = "OVN_Northbound";
    pub const NB_GLOBAL: &str = "NB_Global";
    pub const CONNECTION: &str = "Connection";
    pub const SSL: &str = "SSL";
    pub const LOGICAL_SWITCH: &str = "Logical_Switch";
    pub const LOGICAL_SWITCH_PORT: &str = "Logical_Switch_Port";
    pub const LOGICAL_ROUTER: &str = "Logical_Router";
    pub const LOGICAL_ROUTER_PORT: &str = "Logical_Router_Port";
    pub const LOGICAL_ROUTER_STATIC_ROUTE: &str = "Logical_Router_Static_Route";
    pub const NAT: &str = "NAT";
    pub const LOAD_BALANCER: &str = "Load_Balancer";
    pub const ACL: &str = "ACL";
    pub const PORT_GROUP: &str = "Port_Group";
    pub const ADDRESS_SET: &str = "Address_Set";
}

/// Southbound tables.
pub mod sb {
    pub const DB: &str = "OVN_Southbound";
    pub const CHASSIS: &str = "Chassis";
    pub const PORT_BINDING: &str = "Port_Binding";
}

/// Open vSwitch tables.
pub mod vs {
    pub const DB: &str = "Open_vSwitch";
    pub const OPEN_VSWITCH: &str = "Open_vSwitch";
    pub const BRIDGE: &str = "Bridge";
    pub const PORT: &str = "Port";
    pub const INTERFACE: &str = "Interface";
}

/// Columns (shared by several tables where the schemas use the same name).
pub mod col {
    pub const UUID: &str = "_uuid";
    pub const NAME: &str = "name";
    pub const EXTERNAL_IDS: &str = "external_ids";
    pub const OTHER_CONFIG: &str = "other_config";
    pub const OPTIONS: &str = "options";
    pub const PORTS: &str = "ports";
    pub const ADDRESSES: &str = "addresses";
    pub const PORT_SECURITY: &str = "port_security";
    pub const TYPE: &str = "type";
    pub const MAC: &str = "mac";
    pub const NETWORKS: &str = "networks";
    pub const VIPS: &str = "vips";
    pub const PROTOCOL: &str = "protocol";
    pub const LOAD_BALANCER: &str = "load_balancer";
    pub const STATIC_ROUTES: &str = "static_routes";
    pub const NAT: &str = "nat";
    pub const ACLS: &str = "acls";
    pub const MATCH: &str = "match";
    pub const ACTION: &str = "action";
    pub const PRIORITY: &str = "priority";
    pub const DIRECTION: &str = "direction";
    pub const INTERFACES: &str = "interfaces";
    pub const SELECTION_FIELDS: &str = "selection_fields";
    pub const DYNAMIC_ADDRESSES: &str = "dynamic_addresses";
    pub const TAG: &str = "tag";
    pub const TAGS: &str = "tags";
    pub const IP_PREFIX: &str = "ip_prefix";
    pub const NEXTHOP: &str = "nexthop";
    pub const OUTPUT_PORT: &str = "output_port";
    pub const POLICY: &str = "policy";
    pub const LOGICAL_IP: &str = "logical_ip";
    pub const EXTERNAL_IP: &str = "external_ip";
    pub const DATAPATH_TYPE: &str = "datapath_type";
    pub const MTU_REQUEST: &str = "mtu_request";
    pub const MAC_IN_USE: &str = "mac_in_use";
    pub const OFPORT: &str = "ofport";
}
