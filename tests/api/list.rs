//! ListPayments: order, filters, validation, keyset pages bound to their filters (also while
//! payments are being created), and the query plans of the common shapes on 100,000 rows.

use std::collections::HashSet;
use std::time::Duration;

use paygate::pb::{self, PaymentStatus};
use paygate::store::listing::{self, Cursor, ListFilter};

use crate::common::{TestApp, error_info, sandbox_body, spawn_app};

async fn list(app: &TestApp, request: pb::ListPaymentsRequest) -> Result<pb::ListPaymentsResponse, tonic::Status> {
    app.grpc.clone().list_payments(request).await.map(tonic::Response::into_inner)
}

fn ids(response: &pb::ListPaymentsResponse) -> Vec<String> {
    response.payments.iter().map(|p| p.id.clone()).collect()
}

fn key(p: &pb::Payment) -> ((i64, i32), String) {
    let t = p.created_at.as_ref().expect("created_at");
    ((t.seconds, t.nanos), p.id.clone())
}

async fn pay(app: &TestApp, id: &str, status: &str) {
    let body = sandbox_body(&format!("evt_{id}_{status}"), id, status, 1234, "USD");
    assert_eq!(app.post_sandbox_callback(&body).await.status(), 200);
}

#[tokio::test]
async fn lists_newest_first_filtered_by_status_provider_reference_and_time() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..6 {
        created.push(app.create_payment(&format!("order-{}", i % 3)).await);
    }
    pay(&app, &created[1].id, "succeeded").await;
    pay(&app, &created[2].id, "failed").await;
    pay(&app, &created[4].id, "succeeded").await;
    let newest_first: Vec<String> = created.iter().rev().map(|p| p.id.clone()).collect();

    let all = list(&app, pb::ListPaymentsRequest::default()).await.unwrap();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all.next_page_token, "");
    assert_eq!(all.payments[1].status(), PaymentStatus::Succeeded, "payments as they are now");

    let by_status = |statuses: Vec<PaymentStatus>| pb::ListPaymentsRequest {
        statuses: statuses.into_iter().map(i32::from).collect(),
        ..Default::default()
    };
    let succeeded = list(&app, by_status(vec![PaymentStatus::Succeeded])).await.unwrap();
    assert_eq!(ids(&succeeded), [created[4].id.clone(), created[1].id.clone()]);
    let closed = list(&app, by_status(vec![PaymentStatus::Failed, PaymentStatus::Succeeded])).await.unwrap();
    assert_eq!(ids(&closed), [created[4].id.clone(), created[2].id.clone(), created[1].id.clone()]);

    let sandbox = pb::ListPaymentsRequest { providers: vec!["sandbox".into()], ..Default::default() };
    assert_eq!(ids(&list(&app, sandbox).await.unwrap()), newest_first);
    let xpay = pb::ListPaymentsRequest { providers: vec!["xpay".into()], ..Default::default() };
    assert!(list(&app, xpay).await.unwrap().payments.is_empty(), "a known provider with no payments");

    let reference = pb::ListPaymentsRequest { merchant_reference: "order-1".into(), ..Default::default() };
    assert_eq!(ids(&list(&app, reference).await.unwrap()), [created[4].id.clone(), created[1].id.clone()]);

    // created_after is inclusive, created_before exclusive.
    let window = pb::ListPaymentsRequest {
        created_after: created[1].created_at,
        created_before: created[4].created_at,
        ..Default::default()
    };
    assert_eq!(
        ids(&list(&app, window).await.unwrap()),
        [created[3].id.clone(), created[2].id.clone(), created[1].id.clone()]
    );
    // Filters combine.
    let combined = pb::ListPaymentsRequest {
        statuses: vec![PaymentStatus::Succeeded.into()],
        merchant_reference: "order-1".into(),
        created_before: created[4].created_at,
        ..Default::default()
    };
    assert_eq!(ids(&list(&app, combined).await.unwrap()), [created[1].id.clone()]);
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.create_payment("bad-requests").await;
    }
    let cases: Vec<(pb::ListPaymentsRequest, &str)> = vec![
        (pb::ListPaymentsRequest { page_size: 501, ..Default::default() }, "page_size"),
        (pb::ListPaymentsRequest { page_size: -1, ..Default::default() }, "page_size"),
        (
            pb::ListPaymentsRequest { statuses: vec![PaymentStatus::Unspecified.into()], ..Default::default() },
            "statuses",
        ),
        (pb::ListPaymentsRequest { statuses: vec![1, 99], ..Default::default() }, "statuses"),
        (
            pb::ListPaymentsRequest { providers: vec!["sandbox".into(), "paypal".into()], ..Default::default() },
            "providers",
        ),
        (
            pb::ListPaymentsRequest {
                created_after: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }),
                ..Default::default()
            },
            "created_after",
        ),
        (pb::ListPaymentsRequest { page_token: "not-a-token".into(), ..Default::default() }, "page_token"),
        // The first bad field in proto order.
        (
            pb::ListPaymentsRequest { statuses: vec![0], page_size: 501, page_token: "x".into(), ..Default::default() },
            "statuses",
        ),
    ];
    for (request, field) in cases {
        let err = list(&app, request.clone()).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{request:?}");
        let (reason, metadata) = error_info(&err);
        assert_eq!((reason.as_str(), metadata.get("field").map(String::as_str)), ("INVALID_FIELD", Some(field)));
    }
    assert_eq!(
        list(&app, pb::ListPaymentsRequest { page_size: 500, ..Default::default() }).await.unwrap().payments.len(),
        3
    );

    // A token only continues the listing it came from.
    let first = list(&app, pb::ListPaymentsRequest { page_size: 1, ..Default::default() }).await.unwrap();
    assert!(!first.next_page_token.is_empty());
    let other_filters = pb::ListPaymentsRequest {
        page_size: 1,
        providers: vec!["sandbox".into()],
        page_token: first.next_page_token.clone(),
        ..Default::default()
    };
    let err = list(&app, other_filters).await.unwrap_err();
    assert_eq!(error_info(&err).1.get("field").map(String::as_str), Some("page_token"));
    let mut tampered = first.next_page_token.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = pb::ListPaymentsRequest {
        page_size: 1,
        page_token: String::from_utf8(tampered).unwrap(),
        ..Default::default()
    };
    assert_eq!(
        error_info(&list(&app, tampered).await.unwrap_err()).1.get("field").map(String::as_str),
        Some("page_token")
    );
    // Another page size is fine: it is not a filter.
    let next = pb::ListPaymentsRequest { page_size: 5, page_token: first.next_page_token, ..Default::default() };
    assert_eq!(list(&app, next).await.unwrap().payments.len(), 2);
}

#[tokio::test]
async fn page_size_zero_means_fifty() {
    let app = spawn_app().await;
    sqlx::query(
        "INSERT INTO payments (id, provider, account, merchant_reference, amount_minor, currency, status, \
             created_at, updated_at, version) \
         SELECT 'pay_01ARZ3NDEKTSV4RRFFQ69G' || lpad(i::text, 4, '0'), 'sandbox', 'default', 'r', 100, 'USD', \
             'pending', now() - make_interval(secs => i), now(), 1 FROM generate_series(1, 60) AS i",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let first = list(&app, pb::ListPaymentsRequest::default()).await.unwrap();
    assert_eq!(first.payments.len(), 50);
    let rest = pb::ListPaymentsRequest { page_token: first.next_page_token, ..Default::default() };
    let rest = list(&app, rest).await.unwrap();
    assert_eq!((rest.payments.len(), rest.next_page_token.as_str()), (10, ""));
}

#[tokio::test]
async fn paging_while_payments_are_created_sees_each_earlier_payment_once() {
    let app = spawn_app().await;
    let mut earlier = HashSet::new();
    for i in 0..20 {
        earlier.insert(app.create_payment(&format!("page-{i}")).await.id);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let creator = {
        let stop = stop.clone();
        let grpc = app.grpc.clone();
        let request = app.checkout_request("page-new", 1234, "USD");
        tokio::spawn(async move {
            let mut made = 0;
            while !stop.is_cancelled() {
                grpc.clone().create_checkout(request.clone()).await.expect("create");
                made += 1;
            }
            made
        })
    };
    let mut seen: Vec<pb::Payment> = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let request = pb::ListPaymentsRequest { page_size: 3, page_token: token.clone(), ..Default::default() };
        let page = list(&app, request).await.unwrap();
        pages.push(page.payments.len());
        seen.extend(page.payments);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    stop.cancel();
    assert!(creator.await.unwrap() > 0, "payments were created during the listing");

    let ids: Vec<&String> = seen.iter().map(|p| &p.id).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "no payment twice");
    for id in &earlier {
        assert!(ids.contains(&id), "{id} missing");
    }
    assert!(seen.windows(2).all(|w| key(&w[0]) > key(&w[1])), "newest first");
    assert!(pages[..pages.len() - 1].iter().all(|n| *n == 3), "every page but the last is full: {pages:?}");
    assert!(!pages.is_empty() && *pages.last().unwrap() <= 3);
}

/// The common shapes on 100,000 rows: each is one index scan in the listing's order (no
/// sequential scan, no sort), with and without a time range and a cursor. The status and provider
/// asked for are rare (0.2 % of rows), so only their own index serves them well; a reference has
/// 500 payments (with only a handful, the planner rightly prefers a bitmap scan and a tiny sort).
#[tokio::test]
async fn each_common_shape_is_one_index_range_scan() {
    let app = spawn_app().await;
    sqlx::query(
        "INSERT INTO payments (id, provider, account, merchant_reference, amount_minor, currency, status, \
             created_at, updated_at, version, caller) \
         SELECT 'pay_' || lpad(i::text, 26, '0'), \
             CASE WHEN i % 500 = 1 THEN 'xpay' ELSE (ARRAY['sandbox','eximpe','hitpay','xstak','exirom'])[1 + i % 5] END, \
             'default', 'ref-' || (i % 200), 100, 'USD', \
             CASE WHEN i % 500 = 7 THEN 'processing' \
                 ELSE (ARRAY['pending','succeeded','failed','cancelled','expired'])[1 + (i / 7) % 5] END, \
             now() - make_interval(secs => i), now(), 1, (ARRAY['web','shop'])[1 + i % 2] \
         FROM generate_series(1, 100000) AS i",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("ANALYZE payments").execute(&app.db).await.unwrap();

    let now = chrono::Utc::now();
    let range = |f: ListFilter| ListFilter {
        created_after: Some(now - chrono::TimeDelta::seconds(90_000)),
        created_before: Some(now - chrono::TimeDelta::seconds(1_000)),
        ..f
    };
    let shapes = [
        ("none", ListFilter::default(), "payments_created_idx"),
        (
            "status",
            ListFilter { statuses: vec!["processing".parse().unwrap()], ..Default::default() },
            "payments_status_created_idx",
        ),
        (
            "provider",
            ListFilter { providers: vec!["xpay".into()], ..Default::default() },
            "payments_provider_created_idx",
        ),
        (
            "reference",
            ListFilter { merchant_reference: Some("ref-42".into()), ..Default::default() },
            "payments_reference_idx",
        ),
        // Scoped to one caller (authentication on, no `read_all`).
        // A caller owning half the table: its own index or the unscoped one with a filter are both
        // one range scan in the listing's order.
        (
            "owner",
            ListFilter { owner: Some("web".into()), ..Default::default() },
            "payments_caller_created_idx|payments_created_idx",
        ),
        (
            "owner+status",
            ListFilter {
                owner: Some("web".into()),
                statuses: vec!["processing".parse().unwrap()],
                ..Default::default()
            },
            "payments_caller_status_created_idx|payments_status_created_idx",
        ),
        (
            "owner+provider",
            ListFilter { owner: Some("web".into()), providers: vec!["xpay".into()], ..Default::default() },
            "payments_caller_provider_created_idx|payments_provider_created_idx",
        ),
        (
            "owner+reference",
            ListFilter { owner: Some("web".into()), merchant_reference: Some("ref-42".into()), ..Default::default() },
            "payments_caller_reference|payments_reference_idx",
        ),
    ];
    let cursor =
        Cursor { created_at: now - chrono::TimeDelta::seconds(50_000), id: "pay_00000000000000000000050000".into() };
    let mut conn = app.db.acquire().await.unwrap();
    for (name, filter, index) in shapes {
        for filter in [filter.clone(), range(filter)] {
            for after in [None, Some(&cursor)] {
                let plan = listing::explain_list(&mut conn, &filter, after, 51).await.unwrap();
                let what =
                    format!("{name} (range: {}, cursor: {})\n{plan}", filter.created_after.is_some(), after.is_some());
                assert!(!plan.contains("Seq Scan"), "{what}");
                assert!(!plan.contains("Sort"), "{what}");
                assert!(!plan.contains("Bitmap"), "{what}");
                assert_eq!(plan.matches("Index Scan").count(), 1, "{what}");
                assert!(index.split('|').any(|i| plan.contains(&format!(" {i} "))), "{what}");
                assert!(plan.starts_with("Limit"), "{what}");
            }
        }
    }
}
