//! JSON bodies of the REST API (`/v1/...`). Fields are strings where the server validates them,
//! so that an error can name the field the caller got wrong. Unknown fields are refused.

use serde::{Deserialize, Serialize};

/// Default path of the daemon's API socket.
pub const DEFAULT_API_SOCKET: &str = "/run/shimnet/shimnetd.sock";

/// `POST /v1/networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// Network name.
    pub name: String,
    /// IPv4 subnet (CIDR).
    pub subnet: String,
    /// IPv4 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// First IPv4 address handed out dynamically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    /// Last IPv4 address handed out dynamically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    /// Bridge device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// IPv6 subnet (CIDR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Masquerade outgoing traffic (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<bool>,
    /// Inter-container communication (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// No outside access (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    /// Hairpin mode (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hairpin: Option<bool>,
    /// Destinations never masqueraded (CIDRs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade_to: Vec<String>,
    /// Sources allowed to connect in (CIDRs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
    /// Default host address of published ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_binding_ipv4: Option<String>,
    /// Docker's MAC scheme (02:42 + IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_mac: Option<bool>,
    /// Serve the containers' names on the gateway (DNS; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<bool>,
}

/// A network as the REST API shows it: the reply to create and ensure, the items of `GET
/// /v1/networks`, `network` in `GET /v1/networks/{name}` and `deleted` in the reply to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Name.
    pub name: String,
    /// Bridge device.
    pub bridge: String,
    /// IPv4 subnet (CIDR).
    pub subnet: String,
    /// IPv4 gateway.
    pub gateway: String,
    /// First and last address handed out dynamically, when the whole subnet is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range4: Option<(String, String)>,
    /// IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Masquerade.
    pub masquerade: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// Internal.
    pub internal: bool,
    /// Hairpin mode.
    pub hairpin: bool,
    /// Destinations never masqueraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade_to: Vec<String>,
    /// Sources allowed in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
    /// Default host address of published ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_binding_ipv4: Option<String>,
    /// First two bytes of endpoints' default MACs (`0a:58`, or `02:42` with docker's scheme).
    pub mac_prefix: String,
    /// Docker's MAC scheme (02:42 + IPv4).
    pub docker_mac: bool,
}

/// One published port in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// `tcp`, `udp` or `sctp` (default tcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host address; all addresses when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// `POST /v1/networks/{name}/endpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointAttach {
    /// Container id.
    pub container_id: String,
    /// Network namespace path.
    pub netns: String,
    /// Interface name in the container (default `eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Static IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Static IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// The container's name (resolvable on a network with `dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More names it answers to on this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// `POST /v1/networks/{name}/attach`: ensure (or look up) the network and attach one endpoint in
/// one request, as the CNI plugin's ADD does. Both parts are validated before anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttach {
    /// The network as `PUT /v1/networks/{name}` takes it (created if missing, else it must
    /// match); absent: the network must exist (404 naming the field `network` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure: Option<NetworkCreate>,
    /// The endpoint as `POST /v1/networks/{name}/endpoints` takes it.
    pub endpoint: EndpointAttach,
}

/// The reply to [`NetworkAttach`]: the network and the endpoint (`E`: the endpoint record as
/// `POST /v1/networks/{name}/endpoints` answers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachReply<E> {
    /// The network.
    pub network: Network,
    /// The endpoint.
    pub endpoint: E,
}

/// What a container attached to a network with `dns` puts in its resolv.conf: the `dns` member
/// of the attach (and endpoint) reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsInfo {
    /// Name servers (the network's gateways).
    pub nameservers: Vec<String>,
    /// Search domains.
    pub search: Vec<String>,
}

/// `GET /v1/networks/{name}/names`: what the network's DNS server answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamesReply {
    /// Network name.
    pub network: String,
    /// Whether the network serves names at all (`dns`); the rest is empty when not.
    pub dns: bool,
    /// Search domain (every name also answers as `NAME.DOMAIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Internal network: nothing is forwarded.
    #[serde(default)]
    pub internal: bool,
    /// The server's sockets.
    #[serde(default)]
    pub listeners: Vec<DnsListener>,
    /// Upstream resolvers other names are forwarded to.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Version of the name table (grows with every change).
    #[serde(default)]
    pub serial: u32,
    /// The names, sorted.
    #[serde(default)]
    pub names: Vec<NameEntry>,
}

/// One socket of a network's DNS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsListener {
    /// Address and port.
    pub address: String,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// Served now.
    pub serving: bool,
    /// Why it could not be bound (retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One name of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// The name.
    pub name: String,
    /// Its IPv4 addresses.
    pub ipv4: Vec<String>,
    /// Its IPv6 addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<String>,
}

/// Error body of every non-2xx reply: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Stable code, message and, for invalid input, the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_argument`, `not_found`, `conflict`, ...).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Request field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /v1/peers`: this node's peering status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersReply {
    /// This node's name.
    pub node: String,
    /// This node's underlay address.
    pub address: Option<String>,
    /// This node's pod subnet.
    pub pod_cidr: Option<String>,
    /// IPIP data plane: `kernel`, `bpf` (tc programs over the userspace data plane) or
    /// `userspace`.
    pub ipip: Option<String>,
    /// Unix time (seconds) of the last finished reconcile pass.
    pub last_reconcile: Option<u64>,
    /// Errors of the last pass.
    pub errors: Vec<String>,
    /// Peers.
    pub peers: Vec<PeerInfo>,
    /// Counters of the userspace IPIP data plane, when it runs.
    #[serde(default)]
    pub userspace_ipip: Option<UserspaceIpipCounters>,
    /// Packets the tc programs of IPIP in the kernel carried, when they run.
    #[serde(default)]
    pub tc_ipip: Option<TcIpipCounters>,
    /// Packets the host-gw forwarding programs carried, while they are attached.
    #[serde(default)]
    pub tc_forwarding: Option<TcForwardingCounters>,
    /// Who drops encapsulated packets from non-peers, per encapsulation.
    #[serde(default)]
    pub encap_filter: EncapFilterInfo,
    /// Encapsulated packets from non-peers dropped so far, per encapsulation.
    #[serde(default)]
    pub encap_dropped: EncapDropped,
    /// Where the peers come from.
    #[serde(default)]
    pub source: Option<SourceInfo>,
}

/// Who judges each encapsulation's packets: `nftables`, `iptables` (the firewall filter) or
/// `userspace` (the userspace IPIP data plane); absent when the encapsulation is not in use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncapFilterInfo {
    /// VXLAN.
    pub vxlan: Option<String>,
    /// IPIP.
    pub ipip: Option<String>,
}

/// Encapsulated packets dropped because their outer source is not a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncapDropped {
    /// VXLAN packets.
    pub vxlan: u64,
    /// IPIP packets.
    pub ipip: u64,
}

/// The membership source in [`PeersReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// `file` or `etcd`.
    pub kind: String,
    /// The peer file's path or the etcd endpoints.
    pub detail: String,
    /// The etcd member in use.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// File: readable and valid. etcd: lease kept alive and watch running.
    pub reachable: bool,
    /// Unix time since which `reachable` has had its value.
    pub since: Option<u64>,
    /// Unix time of the last peer set published.
    pub last_update: Option<u64>,
    /// Why the source is unreachable, or why its last input was refused.
    pub error: Option<String>,
    /// Entries skipped as invalid, each named.
    pub skipped: Vec<String>,
    /// Watch events received (etcd).
    pub watch_events: u64,
    /// Sessions (lease + watch) established (etcd).
    pub sessions: u64,
    /// Last revision seen (etcd).
    pub revision: Option<i64>,
    /// This node's lease (etcd).
    pub lease_id: Option<i64>,
    /// Lease TTL in seconds (etcd).
    pub lease_ttl: Option<u64>,
    /// Unix time at which this node's lease expires as of its last renewal (etcd).
    pub lease_expires: Option<u64>,
}

/// `GET /v1/cluster`: subnet reservations (etcd membership).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterReply {
    /// `etcd`.
    pub source: String,
    /// The etcd endpoints.
    pub endpoints: String,
    /// Whether etcd answers.
    pub reachable: bool,
    /// Unix time since which `reachable` has had its value.
    pub since: Option<u64>,
    /// Key prefix.
    pub prefix: String,
    /// All pod subnets.
    pub cluster_cidr: String,
    /// Prefix length of each node's subnet.
    pub subnet_len: u8,
    /// Last revision seen.
    pub revision: Option<i64>,
    /// Reservations, by subnet.
    pub reservations: Vec<ReservationInfo>,
}

/// One reservation in [`ClusterReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationInfo {
    /// The subnet.
    pub subnet: String,
    /// The node holding it.
    pub node: String,
    /// Whether the node is live (its lease alive).
    pub live: bool,
    /// Its underlay address, when live.
    pub address: Option<String>,
    /// Unix time at which its lease expires, when looked up.
    pub lease_expires: Option<u64>,
}

/// Packets the tc programs of IPIP in the kernel carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcIpipCounters {
    /// Packets encapsulated and sent to peers (a super-packet counts once).
    pub encapsulated: u64,
    /// Packets from peers decapsulated.
    pub decapsulated: u64,
}

/// Packets the host-gw forwarding programs carried (a super-packet counts once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcForwardingCounters {
    /// From this node's pods to host-gw peers' pods.
    pub sent: u64,
    /// From host-gw peers' pods to this node's pods.
    pub received: u64,
}

/// Packet counters of the userspace IPIP data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserspaceIpipCounters {
    /// Packets sent to peers.
    pub tx_packets: u64,
    /// Packets received from peers.
    pub rx_packets: u64,
    /// Packets dropped (unknown peer or destination, send errors).
    pub dropped: u64,
    /// Received packets dropped because their outer source is not a peer (part of `dropped`).
    #[serde(default)]
    pub non_peer: u64,
    /// Reads from the TUN (fewer than tx_packets while segmentation offload works).
    pub tun_reads: u64,
    /// Writes to the TUN (fewer than rx_packets while coalescing works).
    pub tun_writes: u64,
    /// Packets that arrived already joined by the underlay's GRO (each carries many segments).
    #[serde(default)]
    pub rx_joined: u64,
}

/// One peer in [`PeersReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    /// Peer name.
    pub name: String,
    /// Underlay address.
    pub address: String,
    /// Pod subnet.
    pub pod_cidr: String,
    /// Data plane chosen: `host-gw`, `ipip` or `vxlan`.
    pub mode: String,
    /// Whether the last probe across the data plane was answered.
    pub reachable: bool,
    /// Unix time (seconds) of the last probe of this peer (absent: not probed yet).
    #[serde(default)]
    pub probed_at: Option<u64>,
    /// Unix time at which the peer's membership lease expires (etcd, when looked up).
    #[serde(default)]
    pub lease_expires: Option<u64>,
}
