//! One application budget shared fairly: one tenant's burst does not queue in front of another's call.

use super::*;

async fn budget_is_shared_fairly(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |settings| {
        for tenant in &mut settings.tenants {
            tenant.rate_limit.per_second = 5;
            tenant.rate_limit.per_minute = 300;
        }
    })
    .await;
    let sub = connect_both(&app, "ada").await;
    let calendar = app.fake.calendar_ids(&sub)[0].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // acme keeps 150 writes waiting for budget.
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..150 {
        let client = app.client.clone();
        let (sub, calendar) = (sub.clone(), calendar.clone());
        waiting.spawn(async move {
            let mut request = with_key(
                ACME_KEY,
                pb::UpsertEventRequest {
                    mode: Default::default(),
                    user: by_sub(&sub),
                    calendar_id: calendar,
                    event: Some(event(&format!("burst-{n}"))),
                },
            );
            request
                .metadata_mut()
                .insert("grpc-timeout", "120S".parse().expect("timeout"));
            client.clone().upsert_event(request).await.map(drop)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // globex is another product: its own connection (acme's holds
    // grpc.max_concurrent_streams calls, the rest queue in acme's client).
    let globex_client = pb::calendar_write_service_client::CalendarWriteServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .expect("uri")
            .connect_lazy(),
    );
    // globex's writes, one after another, each wait about one refill per busy tenant.
    for n in 0..5 {
        let started = Instant::now();
        upsert(
            &globex_client,
            GLOBEX_KEY,
            &sub,
            &calendar,
            &format!("single-{n}"),
            "globex",
        )
        .await
        .expect("globex's write");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "globex's write {n} waited {took:?}");
    }
    assert!(waiting.len() > 100, "acme's burst was still waiting");
    waiting.abort_all();
}

#[tokio::test]
async fn one_tenants_burst_does_not_queue_in_front_of_another_tenants_call() {
    budget_is_shared_fairly(None).await;
}

#[tokio::test]
async fn one_tenants_burst_does_not_queue_in_front_of_another_tenants_call_on_postgres() {
    let Some(pg) = postgres().await else { return };
    budget_is_shared_fairly(Some(&pg)).await;
}

// 4. Changes: a tenant sees only its own events' changes.
