//! Redis with Sentinel (`--redis redis+sentinel://…/name`): the test deployment itself
//! (tests/common/sentinel.rs) fails over as the other tests expect.

mod common;

use common::sentinel::{role, SentinelCluster};

#[test]
fn the_test_deployment_promotes_the_replica_when_the_master_is_killed() {
    let mut cluster = SentinelCluster::start();
    let old = cluster.master_port();
    assert_eq!(role(old).as_deref(), Some("master"));
    let killed = cluster.kill_master();
    assert_eq!(killed, old);
    let new = cluster.await_failover(old);
    assert_ne!(new, old);
    let i = cluster.node_index(old);
    cluster.restart_node(i);
    cluster.await_replicas(new, 1);
    assert_eq!(role(old).as_deref(), Some("slave"), "the old master came back as a replica");
}
