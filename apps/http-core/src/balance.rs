//! Which event loop gets a new connection (httpd with one loop per CPU).

/// The loop with the fewest connections among `n` loops (`load(i)`: loop
/// `i`'s count), looking from `start` on and wrapping, so that among equals
/// the first one at or after `start` wins: the caller passes the index
/// after its last choice, and ties rotate. `n == 0` gives 0.
pub fn least_loaded(n: usize, start: usize, load: impl Fn(usize) -> usize) -> usize {
    let (mut best, mut fewest) = (0, usize::MAX);
    let mut i = start;
    for _ in 0..n {
        if i >= n {
            i = 0;
        }
        let c = load(i);
        if c < fewest {
            (best, fewest) = (i, c);
        }
        i += 1;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewest_wins() {
        let loads = [3, 1, 2, 1];
        assert_eq!(least_loaded(4, 0, |i| loads[i]), 1);
        assert_eq!(least_loaded(4, 2, |i| loads[i]), 3);
        assert_eq!(least_loaded(4, 4, |i| loads[i]), 1);
        assert_eq!(least_loaded(1, 1, |_| 7), 0);
        assert_eq!(least_loaded(0, 0, |_| unreachable!()), 0);
    }

    #[test]
    fn ties_rotate_and_every_loop_gets_its_share() {
        // Connections that never end, handed out one by one: the loops
        // take turns, none starves.
        let mut live = [0usize; 4];
        let mut next = 0;
        for k in 0..40 {
            let t = least_loaded(4, next, |i| live[i]);
            assert_eq!(t, k % 4);
            live[t] += 1;
            next = t + 1;
        }
        assert_eq!(live, [10; 4]);
        // A loop whose connections ended gets the next ones until it
        // catches up.
        live[2] = 4;
        for _ in 0..6 {
            let t = least_loaded(4, next, |i| live[i]);
            assert_eq!(t, 2);
            live[t] += 1;
            next = t + 1;
        }
    }
}
