//! Child processes and /proc: CPU-seconds, resident memory, and cleanup that also runs when
//! the orchestrator is interrupted.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

const MAX_TRACKED: usize = 64;
static TRACKED: [AtomicI32; MAX_TRACKED] = [const { AtomicI32::new(0) }; MAX_TRACKED];

/// Remembers a pid to kill if the orchestrator is interrupted.
pub fn track(pid: i32) {
    for slot in &TRACKED {
        if slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return;
        }
    }
}

/// Forgets a pid that was stopped normally.
pub fn untrack(pid: i32) {
    for slot in &TRACKED {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    for slot in &TRACKED {
        let pid = slot.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) };
}

/// On SIGINT/SIGTERM/SIGHUP: stop every tracked process, then exit.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls async-signal-safe functions.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Scheduling priority of everything the benchmark runs (servers, load clients, sources), so
/// that other work on the machine disturbs the measurement less; both servers get the same.
pub const NICE: i32 = -10;

/// Raises the calling process's priority to `NICE` (best effort: needs root).
pub fn raise_priority() {
    // SAFETY: setpriority on our own process.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
}

/// A command whose process gets SIGTERM when the orchestrator dies, runs at `NICE`, and is
/// pinned to `cores` with taskset when given.
pub fn command(program: &str, cores: Option<&str>) -> Command {
    let mut cmd = match cores {
        Some(cores) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cores, program]);
            cmd
        }
        None => Command::new(program),
    };
    // SAFETY: prctl in the forked child before exec; no allocation.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
            Ok(())
        });
    }
    cmd
}

/// Sends `sig` to a pid.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Waits for a child up to `limit`, then kills it.
pub fn stop_child(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    untrack(child.id() as i32);
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Seconds a process's threads were runnable but waiting for a CPU (schedstat), all threads:
/// how much other work on the machine delayed it.
pub fn run_delay_seconds(pid: i32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    total as f64 / 1e9
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// How a process that exited but was not reaped yet (a zombie child) ended, from the
/// `exit_code` field of /proc/PID/stat: "exit status N" or "killed by signal N".
pub fn how_it_ended(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let code: i32 = stat[stat.rfind(')')? + 1..].split_whitespace().last()?.parse().ok()?;
    Some(match code & 0x7f {
        0 => format!("exit status {}", (code >> 8) & 0xff),
        sig => format!(
            "killed by signal {sig}{}",
            if code & 0x80 != 0 { " (core dumped)" } else { "" }
        ),
    })
}

/// Resident memory of a process, bytes.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Busy CPU-seconds of the whole machine so far (everything but idle and iowait).
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(line) = stat.lines().next() else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 8 {
        return 0.0;
    }
    // user nice system idle iowait irq softirq steal
    (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / clock_ticks()
}

/// Pins the calling thread to one core.
pub fn pin_thread(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
