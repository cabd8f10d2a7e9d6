//! The stand-in IMS of `imsbridge demo`, on its own, for benchmarks: it issues OAuth
//! Server-to-Server tokens to one client and prints its URL.
//!
//!     cargo run --release --example stand_in_ims -- CLIENT_ID CLIENT_SECRET

use std::time::Duration;

use imsbridge::demo::StandInIms;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(client_id), Some(secret)) = (args.next(), args.next()) else {
        eprintln!("usage: stand_in_ims CLIENT_ID CLIENT_SECRET");
        std::process::exit(2);
    };
    let ims = StandInIms::start().await.expect("listening on 127.0.0.1");
    ims.add_client(&client_id, &secret);
    ims.set_lifetime(Duration::from_secs(24 * 3600));
    println!("{}", ims.url());
    let _ = tokio::signal::ctrl_c().await;
}
