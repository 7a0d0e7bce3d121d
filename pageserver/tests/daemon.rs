//! The `pageserver` binary against real PostgreSQL 15: a cleanly stopped data directory
//! imported over gRPC, a basebackup of it that stock PostgreSQL starts from, pages equal
//! to the data files', every error code of the proto's header, restart, a corrupt layer
//! file, and configuration errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Stdio;

use pg_harness::{PgConfig, PgServer};
use postgres_wal::controlfile::ControlFileData;
use strata_proto::pageserver as pb;
use support::{
    basebackup, get_pages, import, request, stopped_cluster, tar_datadir, timeline_id, Daemon,
};
use tonic::Code;

const BLCKSZ: usize = 8192;

fn rel(spc: u32, db: u32, rel_number: u32) -> pb::RelTag {
    pb::RelTag {
        spc_oid: spc,
        db_oid: db,
        rel_number,
        fork: 0,
    }
}

/// (spc, db, relfilenode) of `relation` in database `postgres`, from its file path.
fn relation_file(server: &PgServer, relation: &str) -> (u32, u32, u32, String) {
    let path = server
        .sql(&format!("SELECT pg_relation_filepath('{relation}')"))
        .unwrap();
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["base", db, rel] => (
            1663,
            db.parse().unwrap(),
            rel.parse().unwrap(),
            path.clone(),
        ),
        ["global", rel] => (1664, 0, rel.parse().unwrap(), path.clone()),
        _ => panic!("unexpected path {path}"),
    }
}

fn block(data_dir: &Path, path: &str, blkno: usize) -> Vec<u8> {
    let file = std::fs::read(data_dir.join(path)).unwrap();
    file[blkno * BLCKSZ..(blkno + 1) * BLCKSZ].to_vec()
}

fn unpack(tar: &[u8], dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    tar::Archive::new(tar).unpack(dir)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn import_basebackup_pages_errors_and_restart() {
    let cluster = stopped_cluster();
    let control = ControlFileData::decode(
        &std::fs::read(cluster.data_dir().join("global/pg_control")).unwrap(),
    )
    .unwrap();
    let tar = tar_datadir(cluster.data_dir());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("ps");
    // A short wait for LSNs that never come.
    let flags = ["--wait-lsn-timeout-ms", "300"];
    let mut daemon = Daemon::start(&data_dir, &flags);
    let mut client = daemon.client().await;
    let id = timeline_id(1);

    let caps = client
        .get_capabilities(pb::CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        caps.native_redo_rmgrs,
        page_model::ingest::native_redo_rmgrs()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );

    let info = import(&mut client, id, &tar).await.expect("import");
    let start_lsn = info.start_lsn;
    assert_eq!(info.system_id, control.system_identifier);
    assert_eq!(info.last_record_lsn, start_lsn);
    assert_eq!(info.disk_consistent_lsn, start_lsn);
    // The end of the shutdown checkpoint record pg_control points at.
    assert!(
        start_lsn > control.checkpoint.0,
        "{start_lsn:X} vs {}",
        control.checkpoint
    );
    // A retried import answers with the same timeline.
    let again = import(&mut client, id, &tar).await.expect("second import");
    assert_eq!(again.start_lsn, start_lsn);
    let list = client
        .list_timelines(pb::ListTimelinesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.timelines.len(), 1);
    assert_eq!(list.timelines[0].timeline_id, id.timeline_id.to_string());

    // A stock PostgreSQL starts from the basebackup at the start LSN.
    let (backup_lsn, backup) = basebackup(&mut client, id, start_lsn)
        .await
        .expect("basebackup");
    assert_eq!(backup_lsn, start_lsn);
    let (_, latest) = basebackup(&mut client, id, 0)
        .await
        .expect("basebackup at latest");
    assert_eq!(latest.len(), backup.len());
    let mut standby = client
        .get_basebackup(pb::BasebackupRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
            lsn: start_lsn,
            standby: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut standby_tar = Vec::new();
    while let Some(chunk) = standby.message().await.unwrap() {
        standby_tar.extend_from_slice(&chunk.data);
    }
    let names: Vec<String> = tar::Archive::new(standby_tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "standby.signal"), "{names:?}");
    let server = PgServer::start_from(PgConfig::new(), |dir| unpack(&backup, dir))
        .expect("PostgreSQL starts from the basebackup");
    let tables = server
        .sql("SELECT count(*) FROM pg_class WHERE relname = 'pg_class'")
        .unwrap();
    assert_eq!(tables, "1");
    server
        .sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
        .unwrap();
    assert_eq!(server.sql("SELECT sum(i) FROM t").unwrap(), "500500");

    // Pages equal the imported files' blocks, checksums included.
    for relation in ["pg_class", "pg_database", "pg_proc"] {
        let (spc, db, relnode, path) = relation_file(&server, relation);
        let nblocks = std::fs::metadata(cluster.data_dir().join(&path))
            .unwrap()
            .len() as usize
            / BLCKSZ;
        let blocks: Vec<u32> = (0..nblocks.min(256) as u32).collect();
        let response = get_pages(
            &mut client,
            id,
            start_lsn,
            rel(spc, db, relnode),
            blocks.clone(),
        )
        .await;
        assert_eq!(response.status_code, 0, "{}", response.status_message);
        assert_eq!(response.lsn, start_lsn);
        assert_eq!(response.pages.len(), blocks.len());
        for (blkno, page) in blocks.iter().zip(&response.pages) {
            assert_eq!(
                page.as_slice(),
                block(cluster.data_dir(), &path, *blkno as usize),
                "{relation} block {blkno}"
            );
        }
        let size = client
            .get_rel_size(pb::RelRequest {
                tenant_id: id.tenant_id.to_string(),
                timeline_id: id.timeline_id.to_string(),
                lsn: 0,
                rel: Some(rel(spc, db, relnode)),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(size.exists);
        assert_eq!(size.blocks as usize, nblocks, "{relation}");
        assert_eq!(size.lsn, start_lsn);
    }
    // Several requests on one stream, answered in order; later ones may leave the ids
    // empty, and a failing one does not end the stream.
    let (spc, db, relnode, _) = relation_file(&server, "pg_class");
    let requests: Vec<pb::GetPagesRequest> = [
        (1, true, 0u32),
        (2, false, 4_000_000_000),
        (3, false, relnode),
    ]
    .into_iter()
    .map(|(request_id, named, rel_number)| pb::GetPagesRequest {
        tenant_id: if named {
            id.tenant_id.to_string()
        } else {
            String::new()
        },
        timeline_id: if named {
            id.timeline_id.to_string()
        } else {
            String::new()
        },
        request_id,
        lsn: 0,
        rel: Some(rel(
            spc,
            db,
            if request_id == 1 { relnode } else { rel_number },
        )),
        block_numbers: vec![0, 1],
    })
    .collect();
    let mut responses = client
        .get_pages(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut codes = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        codes.push((
            response.request_id,
            response.status_code,
            response.pages.len(),
        ));
    }
    assert_eq!(
        codes,
        vec![(1, 0, 2), (2, Code::NotFound as i32, 0), (3, 0, 2)]
    );

    // Past the end: a zero page.
    let response = get_pages(&mut client, id, 0, rel(spc, db, relnode), vec![100_000]).await;
    assert_eq!(response.status_code, 0, "{}", response.status_message);
    assert_eq!(response.pages[0], vec![0u8; BLCKSZ]);

    let xact = client
        .get_slru_segment(pb::SlruSegmentRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
            lsn: start_lsn,
            kind: 0,
            segno: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        xact.segment,
        std::fs::read(cluster.data_dir().join("pg_xact/0000")).unwrap()
    );
    let db_size = client
        .get_db_size(pb::DbSizeRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
            lsn: 0,
            spc_oid: 1663,
            db_oid: db,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(db_size.bytes > 1 << 20, "{}", db_size.bytes);

    // Errors, each with the code the proto's header names.
    let unknown_tenant = support::timeline_id(99);
    let unknown_timeline = strata_ids::TenantTimelineId {
        tenant_id: id.tenant_id,
        ..unknown_tenant
    };
    for missing in [unknown_tenant, unknown_timeline] {
        let status = client.timeline_status(request(missing)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        let response = get_pages(&mut client, missing, 0, rel(spc, db, relnode), vec![0]).await;
        assert_eq!(response.status_code, Code::NotFound as i32);
        let status = basebackup(&mut client, missing, 0).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let response = get_pages(
        &mut client,
        id,
        start_lsn - 8,
        rel(spc, db, relnode),
        vec![0],
    )
    .await;
    assert_eq!(
        response.status_code,
        Code::OutOfRange as i32,
        "{}",
        response.status_message
    );
    let response = get_pages(
        &mut client,
        id,
        start_lsn + (1 << 20),
        rel(spc, db, relnode),
        vec![0],
    )
    .await;
    assert_eq!(
        response.status_code,
        Code::DeadlineExceeded as i32,
        "{}",
        response.status_message
    );
    let response = get_pages(&mut client, id, 0, rel(spc, db, 4_000_000_000), vec![0]).await;
    assert_eq!(
        response.status_code,
        Code::NotFound as i32,
        "{}",
        response.status_message
    );
    let bad_id = pb::TimelineRequest {
        tenant_id: "not-an-id".into(),
        timeline_id: id.timeline_id.to_string(),
    };
    let status = client.timeline_status(bad_id).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A tenant of its own, without timelines.
    let tenant = support::timeline_id(7);
    for _ in 0..2 {
        client
            .create_tenant(pb::CreateTenantRequest {
                tenant_id: tenant.tenant_id.to_string(),
            })
            .await
            .expect("CreateTenant is idempotent");
    }
    let status = client.timeline_status(request(tenant)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("timeline"), "{status:?}");

    let metrics = daemon.metrics();
    for name in [
        "pageserver_getpage_requests_total",
        "pageserver_getpage_seconds_bucket",
        "pageserver_basebackups_total 3",
        "pageserver_basebackup_bytes_total",
        "pageserver_last_record_lsn{",
        "pageserver_disk_consistent_lsn{",
        "pageserver_layer_files{",
        "pageserver_layer_bytes{",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // A clean stop, and the timeline is back after a restart.
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let daemon = Daemon::start(&data_dir, &flags);
    let mut client = daemon.client().await;
    let info = client
        .timeline_status(request(id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.start_lsn, start_lsn);
    assert_eq!(info.last_record_lsn, start_lsn);
    let response = get_pages(&mut client, id, 0, rel(spc, db, relnode), vec![0]).await;
    assert_eq!(response.status_code, 0, "{}", response.status_message);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_layer_file_is_data_loss() {
    let cluster = stopped_cluster();
    let tar = tar_datadir(cluster.data_dir());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("ps");
    // The import is frozen into one delta layer at once; no image layer.
    let flags = [
        "--checkpoint-distance",
        "1",
        "--image-layer-after-deltas",
        "1000",
    ];
    let mut daemon = Daemon::start(&data_dir, &flags);
    let mut client = daemon.client().await;
    let id = timeline_id(2);
    let info = import(&mut client, id, &tar).await.expect("import");
    daemon.wait_for_log("froze open layer");
    assert!(daemon.terminate().success());

    let layers_dir = data_dir
        .join("tenants")
        .join(id.tenant_id.to_string())
        .join("timelines")
        .join(id.timeline_id.to_string())
        .join("layers/layers");
    let files: Vec<_> = std::fs::read_dir(&layers_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    std::fs::write(&files[0], &bytes).unwrap();

    let daemon = Daemon::start(&data_dir, &flags);
    let mut client = daemon.client().await;
    let response = get_pages(&mut client, id, 0, rel(1664, 0, 1262), vec![0]).await;
    assert_eq!(
        response.status_code,
        Code::DataLoss as i32,
        "{}",
        response.status_message
    );
    assert!(response.pages.is_empty());
    let status = basebackup(&mut client, id, info.start_lsn)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn imports_are_bounded_and_checked() {
    use pb::import_timeline_request::Item;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("ps"), &["--max-import-bytes", "4096"]);
    let mut client = daemon.client().await;
    let id = timeline_id(3);
    let status = import(&mut client, id, &[0u8; 8192]).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = import(&mut client, id, &[1u8; 1024]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let chunk_first = vec![pb::ImportTimelineRequest {
        item: Some(Item::TarChunk(vec![0; 10])),
    }];
    let status = client
        .import_timeline(tokio_stream::iter(chunk_first))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let list = client
        .list_timelines(pb::ListTimelinesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.timelines.is_empty());
}

fn run_with_config(text: Option<&str>, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Daemon::command();
    if let Some(text) = text {
        let path = dir.path().join("ps.toml");
        std::fs::write(&path, text).unwrap();
        command.arg("--config").arg(&path);
    }
    let out = command.args(extra).stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn configuration_errors_are_one_clear_line() {
    let cases: [(Option<&str>, &[&str], &str); 4] = [
        (Some("listen_grcp = \"127.0.0.1:0\"\n"), &[], "listen_grcp"),
        (
            Some("checkpoint_distance = \"big\"\n"),
            &[],
            "checkpoint_distance",
        ),
        (
            None,
            &["--config", "/nonexistent/ps.toml"],
            "/nonexistent/ps.toml",
        ),
        (
            Some("image_layer_after_deltas = 0\n"),
            &[],
            "image_layer_after_deltas",
        ),
    ];
    for (text, extra, names) in cases {
        let (ok, stderr) = run_with_config(text, extra);
        assert!(!ok, "{text:?} {extra:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("pageserver: "), "{stderr}");
        assert!(stderr.contains(names), "{stderr}");
    }
    let out = Daemon::command()
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("checkpoint_distance = 67108864"), "{text}");
}

#[test]
fn environment_overrides_the_file_and_unknown_variables_are_errors() {
    let run = |vars: &[(&str, &str)], file: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ps.toml");
        std::fs::write(&path, file).unwrap();
        let out = Daemon::command()
            .arg("--config")
            .arg(&path)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The variable wins over the file's valid value: validation then names the key.
    let (ok, stderr) = run(
        &[("STRATA_PAGESERVER_CHECKPOINT_DISTANCE", "0")],
        "checkpoint_distance = 8192\n",
    );
    assert!(
        !ok && stderr.contains("checkpoint_distance must be at least 1"),
        "{stderr}"
    );
    let (ok, stderr) = run(&[("STRATA_PAGESERVER_CHEKPOINT_DISTANCE", "1")], "");
    assert!(!ok, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("STRATA_PAGESERVER_CHEKPOINT_DISTANCE"),
        "{stderr}"
    );
}
