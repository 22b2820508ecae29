//! Golden plans: a typical attach through each front door — REST body, the CNI ADD Podman 4.3
//! sent, the calls dockerd 20.10 sent — decoded and translated by that door, then planned by the
//! engine (on the in-memory kernel and firewall, no root). The plans print as text compared with
//! `tests/golden/*.txt`; `SHIMNET_BLESS=1` rewrites them after an intended change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime_net::engine::Engine;
use runtime_net::fakes::{FakeFirewall, FakeKernel};
use runtime_net::store::Store;
use serde_json::Value;
use shimnet_api::docker::calls;
use shimnet_api::rest::convert;
use shimnet_compat::cni::{self, translate::AttachEnv, NetworkTarget};
use shimnet_compat::docker::conventions;
use shimnet_compat::docker::options;
use shimnet_compat::docker::wire::{decode, Call};
use shimnet_wire::{EndpointAttach, NetworkCreate};

struct Fixture {
    engine: Engine,
    kernel: Arc<FakeKernel>,
    _dir: tempfile::TempDir,
}

fn engine() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kernel = FakeKernel::new();
    let engine = Engine::from_parts(
        Store::open(dir.path()).unwrap(),
        kernel.kernel(),
        FakeFirewall::new(),
    );
    Fixture {
        engine,
        kernel,
        _dir: dir,
    }
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("SHIMNET_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SHIMNET_BLESS=1 writes it)", path.display()));
    assert_eq!(
        got,
        want,
        "{name} differs from {}; SHIMNET_BLESS=1 rewrites it if the change is intended",
        path.display()
    );
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compat/tests/fixtures")
}

fn recorded(file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(file)).unwrap()).unwrap()
}

#[tokio::test]
async fn rest_attach() {
    let f = engine();
    let net: NetworkCreate =
        convert::decode(br#"{"name": "web", "subnet": "10.90.0.0/24"}"#).unwrap();
    f.engine
        .create_network(convert::network_request(&net).unwrap())
        .await
        .unwrap();
    f.kernel.add_netns("/run/netns/c1");
    let body: EndpointAttach = convert::decode(
        br#"{"container_id": "c1", "netns": "/run/netns/c1",
             "ports": [{"host_port": 8080, "container_port": 80},
                       {"protocol": "udp", "host_ip": "127.0.0.1", "host_port": 5353, "container_port": 53}]}"#,
    )
    .unwrap();
    let req = convert::attach_request("web".parse().unwrap(), &body).unwrap();
    let a = f.engine.attach(req).await.unwrap();
    golden("attach-rest.txt", &a.plan.to_string());
}

#[tokio::test]
async fn cni_add_as_podman_sent_it() {
    let f = engine();
    let add = recorded("podman-4.3-cni/01_ADD.json");
    let stdin = serde_json::to_vec(&add["stdin"]).unwrap();
    let env = |k: &str| add["env"][k].as_str().unwrap().to_string();
    let (_, conf) = cni::NetConf::parse(&stdin).unwrap();
    let NetworkTarget::Ensure(net) = cni::network_target(&conf, None).unwrap() else {
        panic!("the recorded configuration ensures its network");
    };
    f.engine
        .ensure_network(convert::network_request(&net).unwrap())
        .await
        .unwrap();
    let netns = env("CNI_NETNS");
    f.kernel.add_netns(&netns);
    let (id, ifname) = (env("CNI_CONTAINERID"), env("CNI_IFNAME"));
    let args = cni::args::parse(&env("CNI_ARGS")).unwrap();
    let body = cni::attach_request(
        &conf,
        AttachEnv {
            container_id: &id,
            netns: &netns,
            ifname: &ifname,
        },
        &args,
        &[],
    )
    .unwrap();
    let req = convert::attach_request(net.name.parse().unwrap(), &body).unwrap();
    let a = f.engine.attach(req).await.unwrap();
    golden("attach-cni.txt", &a.plan.to_string());
}

fn docker_call(file: &str) -> Call {
    let v = recorded(&format!("docker-20.10-remote-driver/{file}"));
    let body = serde_json::to_vec(&v["request"]).unwrap();
    decode(v["path"].as_str().unwrap(), &body).unwrap()
}

#[tokio::test]
async fn docker_create_join_publish_as_dockerd_sent_them() {
    let f = engine();
    let Call::CreateNetwork(c) = docker_call("07_NetworkDriver.CreateNetwork.json") else {
        panic!("CreateNetwork")
    };
    let spec = f
        .engine
        .ensure_network(options::network_request(&c).unwrap())
        .await
        .unwrap();
    let Call::CreateEndpoint(c) = docker_call("09_NetworkDriver.CreateEndpoint.json") else {
        panic!("CreateEndpoint")
    };
    let a = f
        .engine
        .attach(calls::create_endpoint_request(&spec, &c).unwrap())
        .await
        .unwrap();
    let mut text = a.plan.to_string();
    let Call::Join(j) = docker_call("10_NetworkDriver.Join.json") else {
        panic!("Join")
    };
    let key = conventions::endpoint_key(&spec.name, &j.endpoint_id.parse().unwrap());
    let (_, name, plan) = f.engine.join(&key, &j.sandbox_key).await.unwrap();
    text.push_str(&plan.to_string());
    text.push_str(&format!(
        "  hands over {name} (DstPrefix {})\n",
        conventions::DST_PREFIX
    ));
    let Call::ProgramExternal(p) = docker_call("11_NetworkDriver.ProgramExternalConnectivity.json")
    else {
        panic!("ProgramExternalConnectivity")
    };
    let (_, plan) = f
        .engine
        .publish(&key, calls::port_requests(&p.ports).unwrap())
        .await
        .unwrap();
    text.push_str(&plan.to_string());
    golden("attach-docker.txt", &text);
}
