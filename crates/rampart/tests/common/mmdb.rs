//! A small MaxMind DB (.mmdb, format 2.0) writer for tests: IPv4 networks mapped to country
//! codes, laid out as the spec describes (binary search tree with 24-bit records, a 16-byte
//! separator, the data section, then the metadata after `\xAB\xCD\xEFMaxMind.com`).

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

fn ctrl(out: &mut Vec<u8>, ty: u8, size: usize) {
    let (first, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 285 {
        (29, vec![(size - 29) as u8])
    } else {
        let s = size - 285;
        (30, vec![(s >> 8) as u8, s as u8])
    };
    if ty <= 7 {
        out.push((ty << 5) | first);
    } else {
        out.push(first);
        out.push(ty - 7);
    }
    out.extend(extra);
}

fn string(out: &mut Vec<u8>, s: &str) {
    ctrl(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn uint(out: &mut Vec<u8>, ty: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    ctrl(out, ty, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn map_header(out: &mut Vec<u8>, n: usize) {
    ctrl(out, 7, n);
}

/// Build a database: each `(network, prefix length, ISO code)`.
pub fn country_db(nets: &[(Ipv4Addr, u8, &str)]) -> Vec<u8> {
    // Data section: one record per distinct country.
    let mut data = Vec::new();
    let mut offsets: HashMap<&str, usize> = HashMap::new();
    for (_, _, cc) in nets {
        if offsets.contains_key(cc) {
            continue;
        }
        offsets.insert(cc, data.len());
        map_header(&mut data, 1);
        string(&mut data, "country");
        map_header(&mut data, 1);
        string(&mut data, "iso_code");
        string(&mut data, cc);
    }
    // The tree, one node per bit along each inserted network.
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (net, len, cc) in nets {
        let bits = u32::from(*net);
        let mut node = 0;
        for depth in 0..*len {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *len {
                nodes[node][bit] = Rec::Data(offsets[cc]);
                break;
            }
            node = match nodes[node][bit] {
                Rec::Node(n) => n,
                _ => {
                    nodes.push([Rec::Empty, Rec::Empty]);
                    let n = nodes.len() - 1;
                    nodes[node][bit] = Rec::Node(n);
                    n
                }
            };
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let m = &mut out;
    map_header(m, 9);
    string(m, "node_count");
    uint(m, 6, count as u64);
    string(m, "record_size");
    uint(m, 5, 24);
    string(m, "ip_version");
    uint(m, 5, 4);
    string(m, "database_type");
    string(m, "Rampart-Test-Country");
    string(m, "languages");
    ctrl(m, 11, 1);
    string(m, "en");
    string(m, "binary_format_major_version");
    uint(m, 5, 2);
    string(m, "binary_format_minor_version");
    uint(m, 5, 0);
    string(m, "build_epoch");
    uint(m, 9, 1_700_000_000);
    string(m, "description");
    map_header(m, 1);
    string(m, "en");
    string(m, "test database");
    out
}
