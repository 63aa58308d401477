//! Read, write, exec and connect through the LSM hooks: the full scenario.

use std::net::TcpListener;

use ward_abi::Op;
use ward_agent::enforcer::{NetPattern, Object, PathPattern};
use ward_tests::{
    TempDir, connect_as_child, exec_as_child,
    lifecycle::{self, Scenario},
    open_as_child,
};

use crate::support::{cgroups, enforcer};

fn file_scenario(op: Op, flags: i32) {
    let dir = TempDir::new(&format!("life-{op:?}"));
    let file = dir.file("data/secret.txt");
    let object =
        Object::Path(PathPattern::parse(&format!("{}/data/", dir.path().display())).unwrap());
    let (managed, unmanaged) = cgroups(&format!("life-{op:?}"));
    let mut enforcer = enforcer();
    let attempt = |cg: Option<&_>| open_as_child(cg, &file, flags);
    lifecycle::run(
        &mut enforcer,
        &Scenario {
            op,
            object,
            managed: &managed,
            unmanaged: &unmanaged,
            attempt: &attempt,
            denied_errno: libc::EACCES,
        },
    );
}

#[test]
fn read_lifecycle() {
    file_scenario(Op::Read, libc::O_RDONLY);
}

#[test]
fn write_lifecycle() {
    file_scenario(Op::Write, libc::O_WRONLY);
}

#[test]
fn exec_lifecycle() {
    let dir = TempDir::new("life-exec");
    let tool = dir.path().join("bin/tool");
    std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
    std::fs::copy("/bin/busybox", &tool).unwrap();
    let object = Object::Path(PathPattern::parse(tool.to_str().unwrap()).unwrap());
    let (managed, unmanaged) = cgroups("life-exec");
    let mut enforcer = enforcer();
    // argv[0] "true" makes busybox run its `true` applet.
    let attempt = |cg: Option<&_>| exec_as_child(cg, &tool, "true");
    lifecycle::run(
        &mut enforcer,
        &Scenario {
            op: Op::Exec,
            object,
            managed: &managed,
            unmanaged: &unmanaged,
            attempt: &attempt,
            denied_errno: libc::EACCES,
        },
    );
}

#[test]
fn connect_lifecycle() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap());
    let (managed, unmanaged) = cgroups("life-connect");
    let mut enforcer = enforcer();
    let attempt = |cg: Option<&_>| connect_as_child(cg, addr);
    lifecycle::run(
        &mut enforcer,
        &Scenario {
            op: Op::Connect,
            object,
            managed: &managed,
            unmanaged: &unmanaged,
            attempt: &attempt,
            denied_errno: libc::EPERM,
        },
    );
}
