//! WAL offload in a cluster: three real safekeepers that know each other as peers, a
//! real S3-compatible server (`strata-s3-server`, SigV4 checked), and a stock PostgreSQL 15 under
//! `compute_ctl` writing WAL (`pg_switch_wal()` finishes 16 MiB segments cheaply).
//! Only the lowest-id caught-up safekeeper uploads, another takes over when it stops,
//! and while object storage is down commits go on, WAL stays local, and uploads catch
//! up afterwards.
//!
//! Needs `compute_ctl` and `strata-s3-server` built (`cargo build --bins`, as
//! scripts/test.sh does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_support;
mod offload_support;

use std::sync::Arc;

use daemon_support::{timeline_id, Daemon};
use offload_support::*;
use postgres_wal::Lsn;
use remote_storage::config::RemoteStorageConfig;
use remote_storage::{layout, RemoteStorage};
use s3_harness::S3Server;
use strata_ids::TenantTimelineId;

const SEGMENT: u64 = 16 * MIB;
const BUCKET: &str = "wal";
const PREFIX: &str = "cluster";

struct Cluster {
    dir: tempfile::TempDir,
    server: S3Server,
    nodes: Vec<Node>,
    daemons: Vec<Daemon>,
    id: TenantTimelineId,
}

impl Cluster {
    /// Three safekeepers offloading to a fresh bucket: 1 and 2 with the keys in their
    /// flags, 3 with them in the standard AWS variables (the credential chain).
    fn start(timeline: u128) -> Cluster {
        let dir = test_dir();
        let server = S3Server::start().unwrap();
        server.create_bucket(BUCKET).unwrap();
        let nodes: Vec<Node> = (1..=3).map(Node::new).collect();
        let daemons = nodes
            .iter()
            .map(|node| {
                let data_dir = dir.path().join(format!("sk{}", node.id));
                let peers = ["--peers".to_string(), peers_flag(&nodes, node.id)];
                if node.id == 3 {
                    let url = ["--object-store".to_string(), server.url(BUCKET, PREFIX)];
                    let mut command = command(node, &data_dir, &[&url[..], &peers[..]].concat());
                    command.envs(server.env());
                    Daemon::launch(command, &data_dir)
                } else {
                    let flags = [s3_flags(&server, BUCKET, PREFIX), peers.to_vec()].concat();
                    start(node, &data_dir, &flags)
                }
            })
            .collect();
        Cluster {
            dir,
            server,
            nodes,
            daemons,
            id: timeline_id(timeline),
        }
    }

    fn metric(&self, index: usize, name: &str) -> f64 {
        offload_metric(&self.daemons[index], name, self.id)
    }

    fn uploaded_segments(&self, index: usize) -> f64 {
        self.metric(index, "safekeeper_wal_offload_uploaded_segments_total")
    }

    fn local_dir(&self, index: usize) -> std::path::PathBuf {
        timeline_dir(&self.daemons[index].data_dir, self.id)
    }

    async fn store(&self) -> Arc<dyn RemoteStorage> {
        let config = RemoteStorageConfig::S3(self.server.config(BUCKET, PREFIX));
        remote_storage::connect(&config).await.unwrap()
    }

    /// The segment numbers in object storage, in order.
    async fn uploaded(&self) -> Vec<u64> {
        let store = self.store().await;
        let objects = store.list(&layout::wal_prefix(self.id)).await.unwrap();
        objects
            .iter()
            .map(|o| {
                let name = o.path.file_name();
                u64::from_str_radix(&name[8..16], 16).unwrap() * (0x1_0000_0000 / SEGMENT)
                    + u64::from_str_radix(&name[16..24], 16).unwrap()
            })
            .collect()
    }

    /// Every running safekeeper reports `check` true of the timeline.
    async fn wait_all(
        &self,
        what: &str,
        check: impl Fn(&safekeeper::timeline::TimelineStatus) -> bool,
    ) {
        for (node, daemon) in self.nodes.iter().zip(&self.daemons) {
            if daemon_running(daemon) {
                wait_status(node.grpc, self.id, what, &check).await;
            }
        }
    }

    fn assert_no_unexpected_errors(&self) {
        for daemon in &self.daemons {
            daemon.assert_no_unexpected_errors(&[]);
        }
    }
}

fn daemon_running(daemon: &Daemon) -> bool {
    daemon.http_get("/health").0 == 200
}

/// One cluster at a time: two computes and six safekeepers at once would make each
/// slower for no gain on a two-core machine.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn one_safekeeper_of_three_uploads_and_another_takes_over_when_it_stops() {
    let _one = ONE_CLUSTER.lock().await;
    let mut cluster = Cluster::start(80);
    let compute = Compute::start(cluster.dir.path(), cluster.id, &cluster.nodes);
    compute.psql("CREATE TABLE t (id int, v text)");
    let mut end = Lsn::INVALID;
    for n in 0..3 {
        end = compute.fill_segment(n);
    }
    cluster
        .wait_all("the uploaded LSN at the last switch", |s| {
            s.offload.uploaded_lsn >= end && s.commit_lsn >= end
        })
        .await;
    // Safekeeper 1 uploaded; 2 and 3 learned the uploaded LSN from listings alone.
    assert!(cluster.uploaded_segments(0) >= 3.0);
    assert_eq!(cluster.uploaded_segments(1), 0.0);
    assert_eq!(cluster.uploaded_segments(2), 0.0);
    assert_eq!(cluster.metric(0, "safekeeper_wal_offload_uploader"), 1.0);
    assert_eq!(cluster.metric(1, "safekeeper_wal_offload_uploader"), 0.0);
    assert_eq!(cluster.metric(2, "safekeeper_wal_offload_uploader"), 0.0);

    // Byte for byte over the committed range: every object against the local segment
    // of a safekeeper that did not upload it, and against the WAL read back through
    // one (from the timeline start: before it, the first segment holds what the
    // local file holds, zeros, as the uploader's own file shows).
    let status = timeline_status(cluster.nodes[1].grpc, cluster.id).await;
    let start = status.timeline_start_lsn;
    let feed = PageserverFeed::start(cluster.nodes[1].pg, cluster.id, start, Lsn::INVALID).await;
    wait_for("the WAL read back", || {
        (feed.received().len() as u64 >= end.0 - start.0).then_some(())
    })
    .await;
    let read_back = feed.received();
    drop(feed);
    let store = cluster.store().await;
    let segments = cluster.uploaded().await;
    let first = segment_of(start, SEGMENT);
    assert_eq!(
        segments,
        (first..segment_of(end, SEGMENT)).collect::<Vec<_>>()
    );
    for &n in &segments {
        let name = segment_name(n, SEGMENT);
        let object = store
            .get(&layout::wal_segment_path(cluster.id, &name))
            .await
            .unwrap();
        assert_eq!(object.len() as u64, SEGMENT);
        let from = (n * SEGMENT).max(start.0);
        let committed = &object[(from - n * SEGMENT) as usize..];
        for index in [1, 2] {
            let local = std::fs::read(cluster.local_dir(index).join(&name)).unwrap();
            assert!(
                committed == &local[(from - n * SEGMENT) as usize..],
                "{name} differs from safekeeper {}'s copy",
                index + 1
            );
        }
        let offset = (from - start.0) as usize;
        assert!(
            committed == &read_back[offset..offset + committed.len()],
            "{name} differs from the WAL read back through a safekeeper"
        );
        let uploader_copy = std::fs::read(cluster.local_dir(0).join(&name)).unwrap();
        assert!(
            object[..] == uploader_copy[..],
            "{name} is not the uploader's file"
        );
    }

    // Safekeeper 1 stops: commits go on with two of three, and 2 takes over.
    cluster.daemons[0].kill();
    for n in 3..5 {
        end = compute.fill_segment(n);
    }
    cluster
        .wait_all("the uploaded LSN after the takeover", |s| {
            s.offload.uploaded_lsn >= end
        })
        .await;
    assert!(cluster.uploaded_segments(1) >= 2.0);
    assert_eq!(cluster.uploaded_segments(2), 0.0);
    assert_eq!(cluster.metric(1, "safekeeper_wal_offload_uploader"), 1.0);
    assert!(cluster.daemons[1]
        .log()
        .contains("now uploading this timeline's WAL"));
    assert_eq!(
        cluster.uploaded().await,
        (first..segment_of(end, SEGMENT)).collect::<Vec<_>>()
    );
    cluster.assert_no_unexpected_errors();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_store_outage_keeps_wal_local_until_uploads_catch_up() {
    let _one = ONE_CLUSTER.lock().await;
    let mut cluster = Cluster::start(81);
    let compute = Compute::start(cluster.dir.path(), cluster.id, &cluster.nodes);
    compute.psql("CREATE TABLE t (id int, v text)");
    let mut before = Lsn::INVALID;
    for n in 0..2 {
        before = compute.fill_segment(n);
    }
    cluster
        .wait_all("the uploaded LSN before the outage", |s| {
            s.offload.uploaded_lsn >= before
        })
        .await;
    let start = timeline_status(cluster.nodes[0].grpc, cluster.id)
        .await
        .timeline_start_lsn;
    let feed = PageserverFeed::start(cluster.nodes[0].pg, cluster.id, start, Lsn::INVALID).await;

    // Object storage goes away; commits go on.
    cluster.server.stop();
    let mut end = before;
    for n in 2..5 {
        end = compute.fill_segment(n);
    }
    // The pageserver has everything in its own object storage (say): only the
    // uploaded LSN holds local WAL back now, on safekeeper 1 and, through it, on its
    // peers.
    feed.set_apply(end);
    cluster
        .wait_all("the remote-consistent LSN learned", |s| {
            s.offload.remote_consistent_lsn == end && s.commit_lsn >= end
        })
        .await;
    wait_for("a failed upload", || {
        (cluster.metric(0, "safekeeper_wal_offload_errors_total") > 0.0).then_some(())
    })
    .await;
    let uploaded_segment = segment_of(before, SEGMENT);
    for index in 0..3 {
        wait_for(
            &format!("removal up to the uploaded LSN on {}", index + 1),
            || {
                (local_segments(&cluster.local_dir(index), SEGMENT)[0].0 == uploaded_segment)
                    .then_some(())
            },
        )
        .await;
        let status = timeline_status(cluster.nodes[index].grpc, cluster.id).await;
        assert_eq!(status.offload.removal_horizon_lsn, before);
        // Every segment not in object storage is still here.
        let kept: Vec<u64> = local_segments(&cluster.local_dir(index), SEGMENT)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            kept,
            (uploaded_segment..=segment_of(end, SEGMENT)).collect::<Vec<_>>(),
            "safekeeper {}",
            index + 1
        );
    }

    // Back: the uploads catch up, and the local copies go.
    cluster.server.restart().unwrap();
    cluster
        .wait_all("the uploads caught up", |s| {
            s.offload.uploaded_lsn >= end && s.offload.removal_horizon_lsn >= end
        })
        .await;
    for index in 0..3 {
        wait_for(
            &format!("removal up to the new uploaded LSN on {}", index + 1),
            || {
                (local_segments(&cluster.local_dir(index), SEGMENT)[0].0
                    == segment_of(end, SEGMENT))
                .then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        cluster.uploaded().await,
        (segment_of(start, SEGMENT)..segment_of(end, SEGMENT)).collect::<Vec<_>>()
    );
    drop(feed);
    cluster.assert_no_unexpected_errors();
}
