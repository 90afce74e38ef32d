//! A future that is polled again only after it woke its task itself.
//!
//! A task that races a busy future (a client's session) against rare signals (pgfleet
//! stopping, its endpoint being removed) polls every branch on every wake-up, and
//! polling a waiting `watch` or `Notify` future takes that channel's lock, shared by
//! every client. Wrapped in [`Dormant`], a signal's future is polled once to register,
//! then only when its own waker fired: the busy side's wake-ups cost one atomic load.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps a future so that it is polled only on its own wake-ups (and on the first
/// poll, or when the task's waker changes).
pub struct Dormant<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
    /// The task's waker the flag forwards to, as last registered.
    task: Option<Waker>,
}

/// Set by the inner future's waker, then forwarded to the task.
#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = crate::sync::lock(&self.task);
        if let Some(waker) = task.as_ref() {
            waker.wake_by_ref();
        }
    }
}

impl<F: Future> Dormant<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag::default());
        Dormant {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for Dormant<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let same_task = this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if same_task {
            if !this.flag.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
        } else {
            let waker = cx.waker().clone();
            *crate::sync::lock(&this.flag.task) = Some(waker.clone());
            this.task = Some(waker);
            this.flag.woken.store(false, Ordering::Release);
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_on_its_own_signal_only() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let mut changed = Box::pin(async move {
            let _ = rx.changed().await;
        });
        let signal = Dormant::new(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::Relaxed);
            changed.as_mut().poll(cx)
        }));
        tokio::pin!(signal);
        // A busy branch that wakes the task ten times: the signal is polled once.
        let mut ticks = 0;
        let busy = std::future::poll_fn(|cx| {
            ticks += 1;
            if ticks > 10 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        tokio::select! {
            biased;
            _ = busy => {}
            _ = &mut signal => panic!("the signal did not fire"),
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Its own wake-up gets it polled, and it completes.
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(true).unwrap();
            tx
        });
        tokio::time::timeout(Duration::from_secs(5), &mut signal)
            .await
            .expect("the signal completes");
        drop(sender.await);
        assert!(polls.load(Ordering::Relaxed) >= 2);
    }
}
