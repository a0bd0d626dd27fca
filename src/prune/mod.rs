//! Pruning: importance, selection and physical surgery (plain Rust), the
//! unstructured and N:M masks, and the one function that decides a pruning
//! step from the plan (`decide`), for the checker's predictions and the
//! executor alike.

pub mod blocks;
pub mod decide;
pub mod importance;
pub mod mask;
pub mod surgery;

/// `f` over `items` on up to `available_parallelism` (at most 8) threads,
/// results in the order of `items`. Items are taken one at a time, so uneven
/// work (a resnet's last stage holds most weights) spreads across threads.
/// The result does not depend on the number of threads.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(k) else { break };
                        done.push((k, f(item)));
                    }
                    done
                })
            })
            .collect();
        for w in workers {
            for (k, r) in w.join().expect("a worker thread does not panic") {
                out[k] = Some(r);
            }
        }
    });
    out.into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn par_map_keeps_the_order_of_its_items() {
        let items: Vec<u64> = (0..200).rev().collect();
        // Uneven work: early items take longest.
        let out = super::par_map(&items, |&n| (0..n * 1000).fold(n, |a, x| a ^ x) ^ n);
        let serial: Vec<u64> = items
            .iter()
            .map(|&n| (0..n * 1000).fold(n, |a, x| a ^ x) ^ n)
            .collect();
        assert_eq!(out, serial);
        assert!(super::par_map(&[] as &[u8], |&x| x).is_empty());
    }
}
