//! Hot reload: under continuous load no request fails; a bad config is refused and the old one
//! keeps serving; established connections survive.

mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn write(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let up = TestUpstream::start().await;
    let base = config(up.addr, "", "");
    let gw = gateway(&base).await;
    let addr = gw.listen_addrs()[0];
    let dir = std::env::temp_dir();
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (ok, failed) = (ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..300 {
                let req = http::Request::get(format!("http://{addr}/load"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    // Reload twenty times while the load runs, alternating two valid configs.
    let alt = config(up.addr, "    limits:\n      max_body_bytes: 2KiB\n", "");
    for i in 0..20 {
        let text = if i % 2 == 0 { &alt } else { &base };
        let lc = rampart::load_text(text, "reload.yaml", &dir).unwrap();
        gw.reload(&lc).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failures, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(ok.load(Ordering::Relaxed), 1200);
    assert_eq!(gw.generation(), 21);
}

#[tokio::test]
async fn new_routes_apply_and_bad_config_is_refused() {
    let up = TestUpstream::start().await;
    let dir = std::env::temp_dir().join(format!("rampart-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rampart.yaml");
    let v1 = config(up.addr, "", "").replace("path_prefix: /", "path_prefix: /v1");
    write(&path, &v1);
    let lc = rampart_config::load_file(&path).unwrap();
    let gw = rampart::start(lc).await.unwrap();
    let addr = gw.listen_addrs()[0];
    // An established keep-alive connection, used before and after the reloads.
    let c = client();
    assert_eq!(send(&c, addr, "GET", "/v1/a", &[], b"").await.0, 200);
    assert_eq!(send(&c, addr, "GET", "/v2/a", &[], b"").await.0, 404);

    write(&path, &v1.replace("path_prefix: /v1", "path_prefix: /v2"));
    gw.reload_file(&path).unwrap();
    assert_eq!(send(&c, addr, "GET", "/v2/a", &[], b"").await.0, 200);
    assert_eq!(send(&c, addr, "GET", "/v1/a", &[], b"").await.0, 404);

    // Broken: an unknown key and a bad CIDR. Refused; the previous config keeps serving.
    write(
        &path,
        &v1.replace(
            "path_prefix: /v1",
            "path_prefix: /v1\n    bogus: 1\n    ip_filter:\n      deny: [\"300.0.0.1\"]",
        ),
    );
    let err = gw.reload_file(&path).unwrap_err();
    assert!(err.to_string().contains("rampart.yaml:"), "{err}");
    assert_eq!(gw.generation(), 2);
    assert_eq!(send(&c, addr, "GET", "/v2/a", &[], b"").await.0, 200);
    let (_, _, m) = get(gw.admin_addr().unwrap(), "/metrics").await;
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("rampart_config_reloads_total{result=\"failed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rampart_config_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
}
