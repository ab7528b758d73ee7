//! What the HNSW library costs per point, on its own: build rate, resident
//! memory, search latency and recall@10 against exact search, dump and
//! reload time, for `f32` vectors (`DistDot`) or `int8` codes (a per-vector
//! scale, dot product in `i32`), on clustered random 384-d unit vectors.
//!
//! ```text
//! cargo run --release -p indexer --example graph_probe -- N M EF_CONSTRUCTION f32|i8 [DUMP_DIR]
//! cargo run --release -p indexer --example graph_probe -- N M EF_CONSTRUCTION reload DUMP_DIR [mmap]
//! ```
//! (`reload` loads an `i8` dump written by an earlier run with the same N.)
//! The figures and what they mean for a million tickets are in
//! `docs/BENCHMARKS.md`.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

use hnsw_rs::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[derive(Default, Clone, Copy)]
struct DistI8;

#[inline(always)]
fn dot_i8_generic(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let mut tail = 0i32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += *x as i32 * *y as i32;
    }
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] as i32 * y[l] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_generic(a, b)
}

impl Distance<i8> for DistI8 {
    fn eval(&self, a: &[i8], b: &[i8]) -> f32 {
        let n = a.len() - 4;
        let sa = f32::from_le_bytes([a[n] as u8, a[n + 1] as u8, a[n + 2] as u8, a[n + 3] as u8]);
        let sb = f32::from_le_bytes([b[n] as u8, b[n + 1] as u8, b[n + 2] as u8, b[n + 3] as u8]);
        let d = dot_i8(&a[..n], &b[..n]) as f32 * sa * sb;
        (1.0 - d).clamp(0.0, 2.0)
    }
}

fn quant(v: &[f32]) -> Vec<i8> {
    let m = v.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-12);
    let s = m / 127.0;
    let mut q: Vec<i8> = v
        .iter()
        .map(|x| (x / s).round().clamp(-127.0, 127.0) as i8)
        .collect();
    q.extend(s.to_le_bytes().map(|b| b as i8));
    q
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a[1].parse().unwrap();
    let m: usize = a[2].parse().unwrap();
    let efc: usize = a[3].parse().unwrap();
    let mode = a[4].clone();
    let dim = 384;
    let mut rng = StdRng::seed_from_u64(7);
    let centres: Vec<Vec<f32>> = (0..2000)
        .map(|_| {
            let mut v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
            unit(&mut v);
            v
        })
        .collect();
    let mut data: Vec<Vec<f32>> = Vec::with_capacity(n);
    for _ in 0..n {
        let c = &centres[rng.random_range(0..centres.len())];
        let mut v: Vec<f32> = (0..dim)
            .map(|i| c[i] + 1.0 * (rng.random::<f32>() - 0.5) / (dim as f32).sqrt() * 3.4)
            .collect();
        unit(&mut v);
        data.push(v);
    }
    let queries: Vec<Vec<f32>> = (0..200)
        .map(|_| {
            let c = &centres[rng.random_range(0..centres.len())];
            let mut v: Vec<f32> = (0..dim)
                .map(|i| c[i] + (rng.random::<f32>() - 0.5) / (dim as f32).sqrt() * 3.4)
                .collect();
            unit(&mut v);
            v
        })
        .collect();
    // exact
    let exact: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            let mut s: Vec<(f32, usize)> = data
                .iter()
                .enumerate()
                .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i))
                .collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            s[..10].iter().map(|x| x.1).collect()
        })
        .collect();
    let r0 = rss_mib();
    eprintln!("data rss {r0:.0}");
    let t = Instant::now();
    macro_rules! run { ($h:expr, $items:expr, $qs:expr, $tn:expr) => {{
        let h = $h;
        h.parallel_insert_slice(&$items);
        let build = t.elapsed().as_secs_f64();
        let r1 = rss_mib();
        for ef in [32usize, 64, 128] {
            let mut hit = 0; let mut lat = vec![];
            for (qi, q) in $qs.iter().enumerate() {
                let t = Instant::now();
                let res = h.search(q, 10, ef);
                lat.push(t.elapsed().as_secs_f64()*1e3);
                hit += res.iter().filter(|r| exact[qi].contains(&r.d_id)).count();
            }
            lat.sort_by(f64::total_cmp);
            println!("{{\"n\":{n},\"m\":{m},\"efc\":{efc},\"mode\":\"{}\",\"build_s\":{build:.1},\"per_s\":{:.0},\"rss_graph_mib\":{:.0},\"ef\":{ef},\"recall\":{:.3},\"p50\":{:.3},\"p99\":{:.3}}}", $tn, n as f64/build, r1-r0, hit as f64/2000.0, lat[lat.len()/2], lat[lat.len()*99/100]);
        }
        if a.len() > 5 {
            let dir = std::path::Path::new(&a[5]);
            std::fs::create_dir_all(dir).unwrap();
            let t = Instant::now();
            h.file_dump(dir, "g").unwrap();
            println!("dump_s {:.2}", t.elapsed().as_secs_f64());
        }
    }}}
    if mode == "f32" {
        let items: Vec<(&[f32], usize)> =
            data.iter().enumerate().map(|(i, v)| (&v[..], i)).collect();
        let h = Hnsw::<f32, DistDot>::new(m, n, 16, efc, DistDot);
        run!(h, items, queries, "f32");
    } else if mode == "i8" {
        let qd: Vec<Vec<i8>> = data.iter().map(|v| quant(v)).collect();
        drop(data);
        let qq: Vec<Vec<i8>> = queries.iter().map(|v| quant(v)).collect();
        let items: Vec<(&[i8], usize)> = qd.iter().enumerate().map(|(i, v)| (&v[..], i)).collect();
        let h = Hnsw::<i8, DistI8>::new(m, n, 16, efc, DistI8);
        run!(h, items, qq, "i8");
    } else if mode == "reload" {
        drop(data);
        let dir = std::path::Path::new(&a[5]);
        let r0 = rss_mib();
        let t = Instant::now();
        let mut io = HnswIo::new(dir, "g");
        if a.len() > 6 {
            io.set_options(ReloadOptions::default().set_mmap(true));
        }
        let io: &'static mut HnswIo = Box::leak(Box::new(io));
        let h = io.load_hnsw::<i8, DistI8>().unwrap();
        println!(
            "reload_s {:.2} rss {:.0}",
            t.elapsed().as_secs_f64(),
            rss_mib() - r0
        );
        let qq: Vec<Vec<i8>> = queries.iter().map(|v| quant(v)).collect();
        let mut hit = 0;
        let mut lat = vec![];
        for (qi, q) in qq.iter().enumerate() {
            let t = Instant::now();
            let res = h.search(q, 10, 64);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            hit += res.iter().filter(|r| exact[qi].contains(&r.d_id)).count();
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "after reload recall {:.3} p50 {:.3} p99 {:.3} rss {:.0}",
            hit as f64 / 2000.0,
            lat[100],
            lat[198],
            rss_mib() - r0
        );
    }
}
