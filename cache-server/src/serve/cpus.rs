//! Which CPU each HTTP worker runs on, and which worker a connection goes
//! to: nginx's `worker_cpu_affinity auto`, plus the kernel's record of the
//! CPU a connection's packets arrive on (`SO_INCOMING_CPU`).
//!
//! When there is one worker per CPU the process may use, worker `i` is
//! bound to the `i`-th of those CPUs, and a new connection goes to the
//! worker on the CPU its packets are processed on (a NIC queue's CPU; for
//! a client on the same host, the client's own CPU). A request and its
//! response then wake no other CPU. Waking one costs an inter-processor
//! interrupt, and a virtual machine charges one dearly: on the project's
//! 2-core VM, 4 KiB GETs cost 0.043 of them per request without this and
//! 0.009 with it, and the server answered 11 to 24 % more requests per
//! second (`docs/benchmarks.md`, "What was left").
//!
//! Connections are kept roughly balanced: a worker with more than about
//! twice the connections of the least busy one gets none until the others
//! catch up, so one busy NIC queue (or one client thread) cannot load one
//! worker alone.
//! Threads a worker's runtime starts for blocking work (file reads,
//! compression) may run on every allowed CPU, not only their worker's.

use std::io;
use std::os::fd::AsFd;

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// Whether HTTP workers are bound to CPUs (`--http-cpu-affinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CpuAffinity {
    /// One worker per allowed CPU: bind each to its CPU and send each
    /// connection to the worker on the CPU its packets arrive on. Any
    /// other number of workers: no binding.
    #[default]
    Auto,
    /// No binding; connections go to the worker with the fewest open.
    Off,
}

/// Where the workers run: the CPUs the process may use, and each worker's
/// own when they are bound.
#[derive(Debug, Clone)]
pub struct Placement {
    allowed: CpuSet,
    /// Worker `i` runs on `bound[i]`; empty when workers are not bound.
    bound: Vec<usize>,
}

impl Placement {
    /// The placement of `workers` workers under `affinity`, for the CPUs
    /// this process may run on now.
    pub fn plan(workers: usize, affinity: CpuAffinity) -> io::Result<Self> {
        let allowed = sched_getaffinity(None)?;
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&cpu| allowed.is_set(cpu))
            .collect();
        let bound = if affinity == CpuAffinity::Auto && workers > 1 && workers == cpus.len() {
            cpus
        } else {
            Vec::new()
        };
        Ok(Self { allowed, bound })
    }

    /// The CPU worker `worker` is bound to, if workers are bound.
    pub fn cpu_of(&self, worker: usize) -> Option<usize> {
        self.bound.get(worker).copied()
    }

    /// The worker bound to `cpu`, if any.
    pub fn worker_on(&self, cpu: usize) -> Option<usize> {
        self.bound.iter().position(|&bound| bound == cpu)
    }

    /// Binds the calling thread to worker `worker`'s CPU, if it has one.
    pub fn bind_worker(&self, worker: usize) -> io::Result<()> {
        let Some(cpu) = self.cpu_of(worker) else {
            return Ok(());
        };
        let mut set = CpuSet::new();
        set.set(cpu);
        sched_setaffinity(None, &set).map_err(io::Error::from)
    }

    /// Lets the calling thread run on every allowed CPU again (a thread
    /// inherits the CPUs of the thread that started it).
    pub fn release(&self) -> io::Result<()> {
        if self.bound.is_empty() {
            return Ok(());
        }
        sched_setaffinity(None, &self.allowed).map_err(io::Error::from)
    }

    /// The worker a new connection should go to: the one on the CPU its
    /// packets arrive on, unless that one is ahead of the least busy
    /// worker (`least`, with `open[least]` connections) by more than
    /// [`lead_allowed`].
    pub fn choose(&self, connection: impl AsFd, open: &[usize], least: usize) -> usize {
        if self.bound.is_empty() {
            return least;
        }
        let Ok(cpu) = rustix::net::sockopt::socket_incoming_cpu(connection) else {
            return least;
        };
        let (Some(local), Some(&least_open)) = (self.worker_on(cpu as usize), open.get(least))
        else {
            return least;
        };
        let local_open = open.get(local).copied().unwrap_or(usize::MAX);
        if local_open <= least_open + lead_allowed(least_open) {
            local
        } else {
            least
        }
    }
}

/// How many more open connections than the least busy worker a worker
/// may have and still be given a connection that arrived on its CPU: as
/// many as the least busy one has, plus four, so that at most about twice
/// as many.
///
/// A tighter bound undoes the steering it guards: a client's threads
/// open their connections in bursts (`wrk` opens all of one thread's
/// before the next thread's), and a bound of one or two sends most of a
/// burst to the other CPU's worker, where every request then wakes a CPU.
/// Measured on the 2-core VM, 4 KiB GETs: a lead of `1 + least / 8` kept
/// 0.035 to 0.041 wake-ups per request (122,000 to 131,000 requests per
/// second, as without binding), this bound reached 0.005 in most runs
/// (146,000 to 153,000).
pub(super) fn lead_allowed(least_open: usize) -> usize {
    least_open + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus_allowed() -> usize {
        sched_getaffinity(None).unwrap().count() as usize
    }

    #[test]
    fn workers_are_bound_only_one_per_allowed_cpu() {
        let cpus = cpus_allowed();
        let auto = Placement::plan(cpus, CpuAffinity::Auto).unwrap();
        if cpus > 1 {
            assert!((0..cpus).all(|worker| auto.cpu_of(worker).is_some()));
            let first = auto.cpu_of(0).unwrap();
            assert_eq!(auto.worker_on(first), Some(0));
        } else {
            assert_eq!(auto.cpu_of(0), None, "one worker is never bound");
        }
        let off = Placement::plan(cpus, CpuAffinity::Off).unwrap();
        assert_eq!(off.cpu_of(0), None);
        let more = Placement::plan(cpus + 1, CpuAffinity::Auto).unwrap();
        assert_eq!(more.cpu_of(0), None, "more workers than CPUs: unbound");
    }

    #[test]
    fn a_worker_ahead_gets_no_more_until_the_others_catch_up() {
        assert_eq!(lead_allowed(0), 4);
        assert_eq!(lead_allowed(16), 20);
    }
}
