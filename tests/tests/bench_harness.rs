//! The references the benchmarks start leave nothing behind: nginx serving
//! files (http-bench's reference) answers, and once dropped neither its
//! master nor its workers run or listen.

use cachectl_e2e::Nginx;

fn alive(pid: u32) -> bool {
    // A zombie is not running: it only waits for its parent to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            state != Some("Z")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn nginx_serving_files_stops_with_its_workers() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("cas")).unwrap();
    std::fs::write(root.path().join("cas/blob"), b"reference bytes").unwrap();
    let nginx = Nginx::serve_files(root.path(), 2);
    let body = reqwest::get(format!("{}/cas/blob", nginx.base_url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), b"reference bytes");
    let pids = nginx.pids();
    assert_eq!(pids.len(), 3, "a master and two workers: {pids:?}");
    let address = nginx.address();
    drop(nginx);
    for _ in 0..100 {
        if pids.iter().all(|pid| !alive(*pid)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let running: Vec<_> = pids.iter().filter(|pid| alive(**pid)).collect();
    assert!(running.is_empty(), "still running: {running:?}");
    assert!(std::net::TcpStream::connect(address).is_err());
}
