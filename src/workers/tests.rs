use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::test]
async fn the_sockets_of_the_workers_share_one_address() {
    let sockets = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    assert_eq!(sockets.len(), 3);
    let first = sockets[0].local_addr().unwrap();
    assert_ne!(first.port(), 0);
    for socket in &sockets {
        assert_eq!(socket.local_addr().unwrap(), first);
    }
    // An address another process holds without SO_REUSEPORT is refused.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(bind(taken.local_addr().unwrap(), 2).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_serves_its_own_socket_on_its_own_thread() {
    let sockets = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    let accepted: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let (stop, stopping) = watch::channel(false);
    let counts = accepted.clone();
    let mut workers = spawn(sockets, move |index, listener| {
        let counts = counts.clone();
        let mut stopping = stopping.clone();
        async move {
            // The thread knows which worker it is.
            assert_eq!(super::index(), index);
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, _) = accepted.unwrap();
                        counts[index].fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
            }
        }
    })
    .unwrap();
    // The kernel spreads connections over the sockets by their addresses: 64 connections
    // all on one of two sockets would be a chance of 2^-63.
    for _ in 0..64 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        drop(stream);
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while accepted
        .iter()
        .map(|a| a.load(Ordering::SeqCst))
        .sum::<usize>()
        < 64
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every connection was accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(accepted.iter().all(|a| a.load(Ordering::SeqCst) > 0));
    stop.send(true).unwrap();
    let stopping = stop.subscribe();
    assert_eq!(workers.supervise(&stopping).await, Ok(()));
    workers.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_while_serving_is_reported_at_once() {
    let sockets = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let (stop, stopping) = watch::channel(false);
    let mut workers = spawn(sockets, move |index, listener| {
        let mut stopping = stopping.clone();
        async move {
            let _listener = listener;
            if index == 1 {
                panic!("worker 1 breaks");
            }
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    })
    .unwrap();
    let watching = stop.subscribe();
    let error = workers.supervise(&watching).await.unwrap_err();
    assert!(error.contains("worker 1 panicked"), "{error}");
    // The others are then stopped, and end.
    stop.send(true).unwrap();
    assert_eq!(workers.supervise(&watching).await, Ok(()));
    workers.join().await;
}
