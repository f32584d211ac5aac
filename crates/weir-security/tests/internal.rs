//! Internal connections between real sockets: mutual TLS with certificates made here, the cluster
//! secret, both together, and every mismatch refused on both ends with an error that names the fix.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;

use weir_core::Result;
use weir_core::config::ClusterConfig;
use weir_security::testing::Certificates;
use weir_security::{Internal, Secret, Stream};

fn config(tls: Option<(&std::path::Path, &std::path::Path)>) -> ClusterConfig {
    let mut c = ClusterConfig::default();
    if let Some((keystore, truststore)) = tls {
        c.security.internal_tls = true;
        c.security.internal_keystore = Some(keystore.display().to_string());
        c.security.internal_truststore = Some(truststore.display().to_string());
    }
    c
}

/// Connects `client` to `server` over loopback; the server echoes what it reads, uppercased, until
/// the client closes its writing side. Returns both ends' outcomes.
fn exchange(client: Arc<Internal>, server: Arc<Internal>, payload: &[u8]) -> (Result<Vec<u8>>, Result<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = listener.local_addr().expect("address");
    let served = std::thread::spawn(move || -> Result<()> {
        let (tcp, _) = listener.accept().map_err(|e| weir_core::Error::internal(e.to_string()))?;
        let mut s = server.accept(tcp, "test client")?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        s.write_all(&all.to_ascii_uppercase()).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        s.shutdown(Shutdown::Write).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        Ok(())
    });
    let outcome = (|| -> Result<Vec<u8>> {
        let tcp = TcpStream::connect(at).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        let mut s = client.connect(tcp, "test server")?;
        let mut writer = s.try_clone().map_err(|e| weir_core::Error::internal(e.to_string()))?;
        writer.write_all(payload).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        writer.shutdown(Shutdown::Write).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        let mut back = Vec::new();
        s.read_to_end(&mut back).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        Ok(back)
    })();
    (outcome, served.join().expect("the server thread does not panic"))
}

#[test]
fn mutual_tls_carries_large_payloads_both_ways() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = Certificates::generate(dir.path())?;
    let tls = Internal::from_config(&config(Some((&certs.signed, &certs.ca))))?;
    assert!(tls.authenticates());
    // Several TLS records' worth, so the pipe's threads split and join it.
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (back, served) = exchange(tls.clone(), tls.clone(), &payload);
    served?;
    assert_eq!(back?, payload.to_ascii_uppercase());
    // With the secret as well.
    let both = tls.with_secret(Secret::new("a secret for the whole cluster", "the test")?);
    let (back, served) = exchange(both.clone(), both, b"hello");
    served?;
    assert_eq!(back?, b"HELLO");
    Ok(())
}

#[test]
fn a_certificate_from_another_authority_is_refused_by_both_ends() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = Certificates::generate(dir.path())?;
    let good = Internal::from_config(&config(Some((&certs.signed, &certs.ca))))?;
    let stranger = Internal::from_config(&config(Some((&certs.stranger, &certs.stranger))))?;
    let (client, server) = exchange(stranger.clone(), good.clone(), b"x");
    let e = server.expect_err("the server refuses an unknown client certificate");
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    assert!(client.is_err(), "the stranger got through: {client:?}");
    let (client, server) = exchange(good, stranger, b"x");
    let e = client.expect_err("the client refuses an unknown server certificate");
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    assert!(server.is_err());
    Ok(())
}

#[test]
fn tls_on_one_end_only_is_refused_with_the_setting_to_fix() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = Certificates::generate(dir.path())?;
    let tls = Internal::from_config(&config(Some((&certs.signed, &certs.ca))))?;
    let (client, server) = exchange(tls.clone(), Internal::open(), b"x");
    let e = server.expect_err("a plain server refuses a TLS client");
    assert!(e.to_string().contains("security.ssl.internal.enabled"), "{e}");
    assert!(client.is_err());
    let (client, server) = exchange(Internal::open(), tls, b"x");
    assert!(client.is_err() && server.is_err(), "{client:?} {server:?}");
    Ok(())
}

#[test]
fn the_secret_admits_its_holders_only() -> Result<()> {
    let one = Internal::open().with_secret(Secret::new("the secret of cluster one", "the test")?);
    let (back, served) = exchange(one.clone(), one.clone(), b"records");
    served?;
    assert_eq!(back?, b"RECORDS");
    let two = Internal::open().with_secret(Secret::new("the secret of cluster two", "the test")?);
    let (client, server) = exchange(two, one.clone(), b"x");
    assert!(server.expect_err("wrong secret").to_string().contains("does not know this cluster's secret"));
    assert!(client.is_err());
    let (client, server) = exchange(Internal::open(), one, b"x");
    assert!(server.expect_err("no secret").to_string().contains("has no cluster secret"));
    assert!(client.expect_err("no secret").to_string().contains("requires a cluster secret"));
    Ok(())
}

#[test]
fn async_and_blocking_ends_interoperate_over_tls() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = Certificates::generate(dir.path())?;
    let tls = Internal::from_config(&config(Some((&certs.signed, &certs.ca))))?
        .with_secret(Secret::new("a secret for the whole cluster", "the test")?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("address");
        let client = {
            let tls = tls.clone();
            std::thread::spawn(move || -> Result<Vec<u8>> {
                let tcp = TcpStream::connect(at).map_err(|e| weir_core::Error::internal(e.to_string()))?;
                let mut s = tls.connect(tcp, "async server")?;
                s.write_all(b"ping").map_err(|e| weir_core::Error::internal(e.to_string()))?;
                let mut back = [0u8; 4];
                s.read_exact(&mut back).map_err(|e| weir_core::Error::internal(e.to_string()))?;
                Ok(back.to_vec())
            })
        };
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut s = tls.accept_async(tcp, "blocking client").await?;
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.map_err(|e| weir_core::Error::internal(e.to_string()))?;
        assert_eq!(&got, b"ping");
        s.write_all(b"pong").await.map_err(|e| weir_core::Error::internal(e.to_string()))?;
        s.flush().await.map_err(|e| weir_core::Error::internal(e.to_string()))?;
        assert_eq!(client.join().expect("no panic")?, b"pong");
        Ok(())
    })
}

#[test]
fn bad_files_say_how_to_get_pem() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let jks = dir.path().join("keystore.jks");
    std::fs::write(&jks, [0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2]).expect("write");
    let e = Internal::from_config(&config(Some((&jks, &jks)))).expect_err("a Java keystore is refused");
    assert!(e.to_string().contains("keytool -importkeystore"), "{e}");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a secret long enough to use").expect("write");
    let mut c = config(None);
    c.security.secret_file = Some(secret.display().to_string());
    let e = Internal::from_config(&c).expect_err("a world-readable secret is refused");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    let made = weir_security::write_secret_file(&dir.path().join("made"))?;
    c.security.secret_file = Some(dir.path().join("made").display().to_string());
    let read = Internal::from_config(&c)?;
    assert_eq!(read.secret().map(Secret::text), Some(made.text()));
    Ok(())
}

#[test]
fn what_was_written_before_a_shutdown_still_arrives_over_tls() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = Certificates::generate(dir.path())?;
    let tls = Internal::from_config(&config(Some((&certs.signed, &certs.ca))))?;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = listener.local_addr().expect("address");
    let server = tls.clone();
    let received = std::thread::spawn(move || -> Result<usize> {
        let (tcp, _) = listener.accept().map_err(|e| weir_core::Error::internal(e.to_string()))?;
        let mut s = server.accept(tcp, "test client")?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).map_err(|e| weir_core::Error::internal(e.to_string()))?;
        Ok(all.len())
    });
    let tcp = TcpStream::connect(at).map_err(|e| weir_core::Error::internal(e.to_string()))?;
    let mut s = tls.connect(tcp, "test server")?;
    s.write_all(&vec![7u8; 2_000_000]).map_err(|e| weir_core::Error::internal(e.to_string()))?;
    // As a data connection's sender does once its part ended: at once, and gone.
    s.shutdown(Shutdown::Both).map_err(|e| weir_core::Error::internal(e.to_string()))?;
    drop(s);
    assert_eq!(received.join().expect("no panic")?, 2_000_000);
    Ok(())
}

#[test]
fn internal_connections_carry_keepalive_and_a_user_timeout() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = listener.local_addr().expect("address");
    let served = std::thread::spawn(move || -> Result<Stream> {
        let (tcp, _) = listener.accept().map_err(|e| weir_core::Error::internal(e.to_string()))?;
        Internal::open().accept(tcp, "test client")
    });
    let tcp = TcpStream::connect(at).map_err(|e| weir_core::Error::internal(e.to_string()))?;
    let probe = tcp.try_clone().map_err(|e| weir_core::Error::internal(e.to_string()))?;
    let _client = Internal::open().connect(tcp, "test server")?;
    let _server = served.join().expect("no panic")?;
    let socket = socket2::SockRef::from(&probe);
    assert!(socket.keepalive().map_err(|e| weir_core::Error::internal(e.to_string()))?);
    assert_eq!(socket.tcp_keepalive_time().ok(), Some(std::time::Duration::from_secs(5)));
    assert_eq!(socket.tcp_user_timeout().ok().flatten(), Some(std::time::Duration::from_secs(30)));
    Ok(())
}

#[test]
fn one_self_signed_certificate_as_keystore_and_truststore_works_as_in_flink() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = Certificates::generate(dir.path())?;
    let one = Internal::from_config(&config(Some((&certs.self_signed, &certs.self_signed))))?;
    let (back, served) = exchange(one.clone(), one.clone(), b"flink style");
    served?;
    assert_eq!(back?, b"FLINK STYLE");
    // Trusting that one certificate admits nobody else.
    let (client, server) = exchange(Internal::from_config(&config(Some((&certs.signed, &certs.ca))))?, one, b"x");
    assert!(client.is_err() && server.is_err(), "{client:?} {server:?}");
    Ok(())
}
