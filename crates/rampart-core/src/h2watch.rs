//! Slow-header protection for HTTP/2 connections.
//!
//! hyper's HTTP/2 server has no header read timeout: a client can open a stream with a HEADERS
//! frame that does not end the header block and then send the rest (CONTINUATION frames) as
//! slowly as it likes, or never, while keeping the connection busy with PINGs. [`H2Watch`] reads
//! the frame headers of the inbound byte stream (9 bytes each; payloads are skipped, never
//! copied) and tells the connection's watchdog when a header block is open: the watchdog closes
//! the connection when one stays open longer than `timeouts.header_read`, as it does for a slow
//! HTTP/1.1 head. The connection preface is timed the same way.

use crate::server::ConnActivity;
use std::sync::Arc;

/// The client connection preface: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
pub const PREFACE_LEN: usize = 24;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows the frames of one HTTP/2 connection's inbound bytes.
pub struct H2Watch {
    activity: Arc<ConnActivity>,
    /// Preface bytes still to come.
    preface: usize,
    /// The frame header being read.
    hdr: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    /// A header block is open (HEADERS without END_HEADERS, until the CONTINUATION that ends it).
    open: bool,
}

impl H2Watch {
    /// A watch for a connection of which `preface_left` preface bytes are still to be read.
    pub fn new(activity: Arc<ConnActivity>, preface_left: usize) -> Self {
        if preface_left == 0 {
            activity.head_end();
        }
        H2Watch {
            activity,
            preface: preface_left,
            hdr: [0; 9],
            have: 0,
            skip: 0,
            open: false,
        }
    }

    /// Feed the next inbound bytes.
    pub fn feed(&mut self, mut buf: &[u8]) {
        if self.preface > 0 {
            let n = self.preface.min(buf.len());
            self.preface -= n;
            buf = &buf[n..];
            if self.preface == 0 {
                self.activity.head_end();
            }
        }
        while !buf.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                self.skip -= n;
                buf = &buf[n..];
                continue;
            }
            let n = (9 - self.have).min(buf.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&buf[..n]);
            self.have += n;
            buf = &buf[n..];
            if self.have < 9 {
                return;
            }
            self.have = 0;
            let [l0, l1, l2, ty, flags, ..] = self.hdr;
            self.skip = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let ends = flags & END_HEADERS != 0;
            match ty {
                HEADERS | PUSH_PROMISE if !ends && !self.open => {
                    self.open = true;
                    self.activity.h2_head_begin();
                }
                CONTINUATION if ends && self.open => {
                    self.open = false;
                    self.activity.h2_head_end();
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let l = payload.len();
        let mut f = vec![(l >> 16) as u8, (l >> 8) as u8, l as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn open_header_blocks_are_reported_in_any_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let open_at = bytes.len() + 9;
        bytes.extend(frame(HEADERS, 0x1, 1, &[0x82, 0x86])); // no END_HEADERS
        bytes.extend(frame(0x6, 0, 0, &[0; 8])); // PING
                                                 // The block ends with the frame header that carries END_HEADERS.
        let closed_at = bytes.len() + 9;
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x84]));
        bytes.extend(frame(HEADERS, END_HEADERS | 0x1, 3, &[0x82]));
        for split in 1..bytes.len() {
            let a = Arc::new(ConnActivity::new());
            let mut w = H2Watch::new(a.clone(), PREFACE_LEN);
            let mut fed = 0;
            for chunk in bytes.chunks(split) {
                w.feed(chunk);
                fed += chunk.len();
                let open = a.h2_head_open();
                if fed >= open_at && fed < closed_at {
                    assert!(open, "split {split} at {fed}");
                } else {
                    assert!(!open, "split {split} at {fed}");
                }
            }
        }
    }
}
