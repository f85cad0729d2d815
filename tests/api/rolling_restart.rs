//! Rolling restarts fail no call (issue #25, item 11): two replicas (the real
//! binary) on one PostgreSQL under steady load, each restarted in turn, while
//! a stand-in for the load balancer routes calls by each replica's readiness
//! as a kubelet sees it — polled, so a little late.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use calgate::grpc::pb::calendar_write_service_client::CalendarWriteServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    postgres::{PgTestDb, use_postgres},
    support::*,
    support::{Binary, set, start_binary_with},
};

/// How often the stand-in load balancer reads each replica's readiness.
const PROBE_PERIOD: Duration = Duration::from_millis(250);

#[derive(Clone)]
struct Replica {
    client: CalendarWriteServiceClient<Channel>,
    channel: Channel,
    /// Readiness as last probed.
    ready: Arc<AtomicBool>,
}

impl Replica {
    fn of(binary: &Binary) -> Replica {
        Replica {
            client: binary.client.clone(),
            channel: binary.channel(),
            ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// The replicas the load balancer knows; a restarted one is replaced.
type Pool = Arc<Mutex<Vec<Replica>>>;

fn probe(pool: Pool, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let replicas = pool.lock().expect("pool").clone();
            for replica in replicas {
                let request = HealthCheckRequest {
                    service: "calgate.v1.CalendarWriteService".into(),
                };
                let answer =
                    tokio::time::timeout(PROBE_PERIOD, HealthClient::new(replica.channel.clone()).check(request)).await;
                let serving =
                    matches!(answer, Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32);
                replica.ready.store(serving, Ordering::Relaxed);
            }
            tokio::time::sleep(PROBE_PERIOD).await;
        }
    });
}

/// Callers writing without pause, each call to the next ready replica.
fn load(
    pool: Pool,
    sub: String,
    calendar: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
) {
    for caller in 0..4 {
        let (pool, sub, calendar, stop, ok, failed) = (
            pool.clone(),
            sub.clone(),
            calendar.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            let mut turn = caller;
            while !stop.load(Ordering::Relaxed) {
                turn += 1;
                let ready: Vec<Replica> = pool
                    .lock()
                    .expect("pool")
                    .iter()
                    .filter(|r| r.ready.load(Ordering::Relaxed))
                    .cloned()
                    .collect();
                let Some(replica) = ready.get(turn % ready.len().max(1)).cloned() else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match Binary::upsert_with(replica.client, &sub, &calendar).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        failed
                            .lock()
                            .expect("failed")
                            .push(format!("{:?}: {}", status.code(), status.message()))
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_each_replica_in_turn_fails_no_call() {
    let Some(db) = PgTestDb::create().await else { return };
    let fake = start_fake().await;
    let work = Workdir::new();
    let config = |c: &mut toml::Table| {
        use_postgres(c, &db.url);
        set(c, "drain_delay", "1s");
    };
    let a = start_binary_with(&fake, &work, config).await;
    let b = start_binary_with(&fake, &work, config).await;
    let grant = a.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();

    let pool: Pool = Arc::new(Mutex::new(vec![Replica::of(&a), Replica::of(&b)]));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    probe(pool.clone(), stop.clone());
    load(
        pool.clone(),
        grant.sub.clone(),
        calendar,
        stop.clone(),
        ok.clone(),
        failed.clone(),
    );

    let mut replicas = [a, b];
    for (index, replica) in replicas.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        replica.stop().await;
        let restarted = start_binary_with(&fake, &work, config).await;
        pool.lock().expect("pool")[index] = Replica::of(&restarted);
        *replica = restarted;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let failed = failed.lock().expect("failed").clone();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!("rolling restart: {ok} calls succeeded, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} calls made: the load was not steady");
    for replica in &mut replicas {
        replica.stop().await;
    }
}
