//! Passing listening sockets between processes over a Unix socket
//! (SCM_RIGHTS), as nginx, HAProxy, Envoy and Pingora do for their
//! upgrades: the socket itself moves, so its accept queue is never empty
//! of an owner and no waiting connection is lost.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Sends `fds` with a one-byte message.
pub(crate) async fn send_fds(stream: &UnixStream, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    // No descriptor at all: the marker byte goes alone.
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(b"F")],
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives up to `max` descriptors sent by [`send_fds`]; they arrive
/// close-on-exec.
pub(crate) async fn receive_fds(stream: &UnixStream, max: usize) -> std::io::Result<Vec<OwnedFd>> {
    loop {
        stream.readable().await?;
        let received = stream.try_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([RawFd; 16]);
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            if msg.bytes == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the other proxy closed the connection before sending its sockets",
                ));
            }
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel just installed these descriptors in
                    // this process for us; nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                return Err(std::io::Error::other(
                    "more sockets were sent than expected",
                ));
            }
            Ok(fds)
        });
        match received {
            Ok(fds) if fds.len() <= max => return Ok(fds),
            Ok(fds) => {
                return Err(std::io::Error::other(format!(
                    "{} sockets sent, at most {max} expected",
                    fds.len()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_socket_crosses_and_keeps_its_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A client waits in the queue before the hand-over.
        let early = std::net::TcpStream::connect(addr).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_fds(&a, &[std::os::fd::AsFd::as_fd(&listener)])
            .await
            .unwrap();
        drop(listener);
        let fds = receive_fds(&b, 4).await.unwrap();
        assert_eq!(fds.len(), 1);
        let moved = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(moved.local_addr().unwrap(), addr);
        let (accepted, _) = moved.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), early.local_addr().unwrap());
    }
}
