//! Floor measurement: the least a hyper server + hyper client proxy does per request.
use hyper::client::conn::http1 as c1;
use hyper::server::conn::http1 as s1;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::sync::Mutex;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:28620")
            .await
            .unwrap();
        loop {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let up = tokio::net::TcpStream::connect("127.0.0.1:28480")
                    .await
                    .unwrap();
                up.set_nodelay(true).unwrap();
                let (tx, conn) = c1::handshake::<_, hyper::body::Incoming>(TokioIo::new(up))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let tx = Arc::new(Mutex::new(tx));
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let mut g = tx.lock().await;
                            g.ready().await?;
                            g.send_request(req).await
                        }
                    },
                );
                let _ = s1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}
