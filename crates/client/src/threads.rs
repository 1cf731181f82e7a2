//! Thread priority: work that may wait (the load generator's signing, the
//! server's voucher recovery) runs below the threads whose latency counts.

/// Lowers the calling thread's priority by `niceness` levels (on Linux a
/// nice level is a thread's own; levels stop at 19). Zero leaves it as it
/// is. Raising a priority needs privileges, so a negative `niceness` may be
/// refused; the thread then runs on at its priority.
pub fn lower_thread_priority(niceness: i32) -> std::io::Result<()> {
    if niceness == 0 {
        return Ok(());
    }
    let thread = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(thread))?;
    rustix::process::setpriority_process(Some(thread), current + niceness)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("read")
    }

    #[test]
    fn only_the_calling_thread_runs_lower() {
        const NICENESS: i32 = 5;
        let before_here = own();
        let (before, after) = std::thread::spawn(|| {
            let before = own();
            lower_thread_priority(NICENESS).expect("lowering is always permitted");
            (before, own())
        })
        .join()
        .expect("thread");
        assert_eq!(after, (before + NICENESS).min(19));
        assert_eq!(own(), before_here);
    }

    #[test]
    fn zero_leaves_the_priority_as_it_is() {
        let (before, after) = std::thread::spawn(|| {
            let before = own();
            lower_thread_priority(0).expect("nothing to do");
            (before, own())
        })
        .join()
        .expect("thread");
        assert_eq!(after, before);
    }
}
