//! Time budgets for Lua code: every hook (and every script while it loads) runs under a deadline
//! that a VM-wide instruction hook checks every 1000 instructions.
//!
//! The hook is global to the VM, so a coroutine a script makes itself (`coroutine.wrap`,
//! `coroutine.create`) is checked as well as the hook's own. It charges the budget of the hook
//! being run right now: a VM is only ever entered from its worker's thread, one poll at a time,
//! and [`call_async`] marks its budget as current for the length of each poll.
//!
//! Once a budget is spent it stays spent: every later check raises again, and the sandbox's
//! `pcall`, `xpcall` and `coroutine.resume` re-raise the error instead of returning it
//! ([`install`]), so a script cannot catch its way past its budget (nor past the memory cap).
//!
//! The budget counts time spent running Lua, not time spent waiting for the daemon: the async
//! API functions (`docker.*`, `http.*`, reading the body) call [`pause`] around their await, which
//! moves the deadline by the time waited. Nor does it count time the hook's thread spent off the
//! CPU: on a loaded machine (fifty `docker run`s starting at once on two cores) the kernel may
//! set the gateway's thread aside for longer than the whole budget in the middle of a hook. So a
//! budget has two clocks. The wall clock (cheap to read) runs while the hook is polled, less its
//! waits and less the time it was parked; the thread's CPU clock (a system call) runs only while
//! the hook's own code is on the CPU. The second never runs ahead of the first, so it is read
//! only once the first is past the limit, and the budget is spent when both are.
//!
//! A worker runs many calls on one thread, so a hook that computes for a long time would make
//! every other call on its worker wait. The same instruction hook therefore *preempts*: once a
//! hook has run for [`SLICE`] in one poll, its coroutine yields and its task goes to the back of
//! the worker's queue, behind whatever arrived meanwhile (the wake is deferred until the
//! runtime has polled for I/O). Time spent parked is not charged to the hook. Only the hook's own
//! coroutine is preempted (a coroutine the script made itself would see the yield as its own),
//! and only while the VM uses at most half its memory cap: a parked hook keeps what it holds,
//! so that the others always find half the VM free. A hook that holds more than that cannot be
//! set aside; it runs on for at most [`HOG_GRACE`] (of running time) and is then ended, so the
//! calls behind it wait that long at most. Code inside a coroutine the script made is not
//! preempted (it runs until it yields, or to the budget).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use mlua::thread::ThreadStatus;
use mlua::{FromLuaMulti, Function, HookTriggers, IntoLuaMulti, Lua, Value, VmState};

use super::errors::raise;
use crate::error::Error;

/// How long a hook runs before it lets the other calls on its worker have a turn. On the wall
/// clock: a slice cut short by time off the CPU only means an early turn for the others.
pub const SLICE: Duration = Duration::from_millis(1);

/// How long a hook may run on while it holds more than half its VM's memory cap (when it cannot
/// be preempted, and so holds up every other call on its worker) before it is ended. Counted on
/// the thread's CPU clock, like the budget: time the kernel keeps the thread off the CPU holds up
/// the other calls as much, and is not the hook's doing.
pub const HOG_GRACE: Duration = Duration::from_millis(10);

/// The budget of one hook run.
struct Budget {
    deadline: Mutex<Instant>,
    limit: Duration,
    /// Set once the deadline has passed; it never clears.
    spent: AtomicBool,
    /// The coroutine that may be preempted (its `to_pointer`), if any.
    thread: Option<usize>,
    /// When the current poll began; preemption is due [`SLICE`] after it.
    poll_started: Mutex<Instant>,
    /// The instruction hook asked the coroutine to yield during this poll.
    preempted: AtomicBool,
    /// Time spent holding more than half the VM's memory, when it cannot be preempted.
    hog: Mutex<Hog>,
    /// Why the budget is spent, when it is not time.
    why: Mutex<Option<String>>,
    /// The CPU time charged.
    cpu: Mutex<Cpu>,
}

/// CPU time charged to one hook run: `used` in earlier polls, plus this thread's CPU time since
/// `since` (the current poll began), less `credit` (spent inside [`pause`]d waits).
#[derive(Default)]
struct Cpu {
    used: Duration,
    since: Option<Duration>,
    credit: Duration,
}

impl Cpu {
    /// The CPU time charged so far, or None when the thread's CPU clock cannot be read.
    fn charged(&self) -> Option<Duration> {
        let running = match self.since {
            Some(since) => thread_cpu()?.saturating_sub(since),
            None => Duration::ZERO,
        };
        Some((self.used + running).saturating_sub(self.credit))
    }
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

#[derive(Default)]
struct Hog {
    /// Since when the hook has held more than half the VM's memory cap.
    since: Option<Mark>,
    /// When the VM's garbage was last collected to find out.
    collected: Option<Instant>,
}

/// A moment on the wall clock and on the thread's CPU clock (when it can be read).
#[derive(Clone, Copy)]
struct Mark(Instant, Option<Duration>);

impl Mark {
    fn now() -> Mark {
        Mark(Instant::now(), thread_cpu())
    }

    /// The time this thread has run since the mark; the wall clock's time where the CPU clock
    /// cannot be read.
    fn ran(&self) -> Duration {
        match (self.1, thread_cpu()) {
            (Some(then), Some(now)) => now.saturating_sub(then),
            _ => self.0.elapsed(),
        }
    }
}

impl Budget {
    fn new(limit: Duration, thread: Option<usize>) -> Arc<Budget> {
        let now = Instant::now();
        Arc::new(Budget {
            deadline: Mutex::new(now + limit),
            limit,
            spent: AtomicBool::new(false),
            thread,
            poll_started: Mutex::new(now),
            preempted: AtomicBool::new(false),
            hog: Mutex::default(),
            why: Mutex::default(),
            cpu: Mutex::default(),
        })
    }

    /// A poll of the hook begins (or, for a script loading, its one run): its CPU time counts.
    fn begin_poll(&self) {
        self.cpu.lock().unwrap_or_else(|e| e.into_inner()).since = thread_cpu();
    }

    /// The poll is over: what it used is charged.
    fn end_poll(&self) {
        let mut cpu = self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = cpu.since.take() {
            cpu.used += thread_cpu().map_or(Duration::ZERO, |now| now.saturating_sub(since));
        }
    }

    /// CPU time spent inside a [`pause`]d wait, which is not the hook's.
    fn credit(&self, cpu: Duration) {
        self.cpu.lock().unwrap_or_else(|e| e.into_inner()).credit += cpu;
    }

    /// Whether the running coroutine should yield now, to let the worker's other calls run.
    fn preempt(&self, lua: &Lua) -> bool {
        let Some(thread) = self.thread else {
            return false;
        };
        if self
            .poll_started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            < SLICE
        {
            return false;
        }
        if lua.current_thread().to_pointer() as usize != thread {
            return false;
        }
        let cap = lua.app_data_ref::<MemoryCap>().map_or(usize::MAX, |c| c.0);
        let mut hog = self.hog.lock().unwrap_or_else(|e| e.into_inner());
        if lua.used_memory() > cap / 2 {
            // Often garbage that no allocation has made Lua collect yet (say, of a hook that
            // ran out of memory): collect, now and then, to find out.
            if hog.collected.is_none_or(|t| t.elapsed() >= HOG_GRACE / 4) {
                let _ = lua.gc_collect();
                hog.collected = Some(Instant::now());
            }
            if lua.used_memory() > cap / 2 {
                // Running time, as for the budget: the calls behind it wait only while it runs.
                let since = *hog.since.get_or_insert_with(Mark::now);
                if since.ran() > HOG_GRACE {
                    *self.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                        "hook held more than half of its VM's memory cap (--vm-memory-mb {}) \
                         for over {} ms; a hook that large cannot be set aside to let other \
                         calls run",
                        cap >> 20,
                        HOG_GRACE.as_millis()
                    ));
                    self.spent.store(true, Ordering::Relaxed);
                }
                return false;
            }
        }
        hog.since = None;
        self.preempted.store(true, Ordering::Relaxed);
        true
    }

    /// Add `by` to the deadline: time the hook spent waiting, not running.
    fn extend(&self, by: Duration) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    fn exceeded(&self) -> bool {
        if self.spent.load(Ordering::Relaxed) {
            return true;
        }
        // The wall clock first: the CPU clock never runs ahead of it and costs a system call.
        if Instant::now() <= *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) {
            return false;
        }
        let cpu = self.cpu.lock().unwrap_or_else(|e| e.into_inner()).charged();
        // Without a CPU clock, the wall clock alone decides.
        if cpu.is_some_and(|c| c <= self.limit) {
            return false;
        }
        self.spent.store(true, Ordering::Relaxed);
        true
    }

    fn error(&self, location: String) -> mlua::Error {
        let why = self.why.lock().unwrap_or_else(|e| e.into_inner()).clone();
        raise(Error::Script {
            location,
            reason: why.unwrap_or_else(|| {
                format!(
                    "hook exceeded its time budget of {} ms",
                    self.limit.as_millis()
                )
            }),
        })
    }
}

/// The budget of the hook running in this VM right now (VM app data).
#[derive(Default)]
struct Current(Mutex<Option<Arc<Budget>>>);

/// The VM's memory cap (VM app data), for the preemption rule.
struct MemoryCap(usize);

fn current(lua: &Lua) -> Option<Arc<Budget>> {
    lua.app_data_ref::<Current>()
        .and_then(|c| c.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

fn set_current(lua: &Lua, budget: Option<Arc<Budget>>) -> Option<Arc<Budget>> {
    match lua.app_data_ref::<Current>() {
        Some(c) => std::mem::replace(&mut *c.0.lock().unwrap_or_else(|e| e.into_inner()), budget),
        None => None,
    }
}

/// Install the VM-wide budget hook and the catch-proof `pcall`, `xpcall` and `coroutine.resume`.
/// Call once, while the VM is built, before any script runs; `memory_cap` is the VM's memory
/// limit.
pub fn install(lua: &Lua, memory_cap: usize) -> mlua::Result<()> {
    lua.set_app_data(Current::default());
    lua.set_app_data(MemoryCap(memory_cap));
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(1000),
        |lua, debug| match current(lua) {
            Some(b) if b.exceeded() => {
                // Name the line that was running, so the error points into the loop; inside
                // luastrip's own wrappers (`pcall`, the metered built-ins), the script's line
                // that called them.
                let src = debug.source();
                let file = src.short_src.as_deref().unwrap_or("?");
                if file == "luastrip" {
                    return Err(b.error(script_location(lua)));
                }
                let line = debug.current_line().unwrap_or(0);
                Err(b.error(format!("{file}:{line}")))
            }
            Some(b) if b.preempt(lua) => Ok(VmState::Yield),
            _ => Ok(VmState::Continue),
        },
    )?;
    // `fatal(ok, err)` raises when the error a protected call caught must not be caught: the
    // hook's budget is spent, or the VM ran out of memory (Lua reports that as its own constant
    // message; a script raising the same text only fails its own call).
    let fatal = lua.create_function(|lua, (ok, err): (bool, Value)| {
        if !ok {
            if let Value::Error(e) = &err {
                // The budget error as raised, naming the line that was running.
                let over_budget = matches!(super::errors::typed(e), Some(Error::Script { .. }));
                if over_budget || super::errors::is_memory_error(e) {
                    return Err((**e).clone());
                }
            }
            if let Value::String(s) = &err {
                if s.as_bytes().as_ref() == b"not enough memory" {
                    return Err(mlua::Error::MemoryError("not enough memory".into()));
                }
            }
        }
        match current(lua) {
            Some(b) if b.exceeded() => Err(b.error(script_location(lua))),
            _ => Ok(()),
        }
    })?;
    lua.load(
        r#"
        local fatal, pcall, xpcall, resume = ...
        local function pass(ok, ...)
          fatal(ok, (...))
          return ok, ...
        end
        _G.pcall = function(...) return pass(pcall(...)) end
        _G.xpcall = function(...) return pass(xpcall(...)) end
        coroutine.resume = function(...) return pass(resume(...)) end
        "#,
    )
    .set_name("=luastrip")
    .call::<()>((
        fatal,
        lua.globals().get::<Function>("pcall")?,
        lua.globals().get::<Function>("xpcall")?,
        lua.globals()
            .get::<mlua::Table>("coroutine")?
            .get::<Function>("resume")?,
    ))
}

/// Built-in functions whose one call can take long (their work grows with a string or table the
/// script made, up to the VM's memory cap) and which run no Lua instructions meanwhile: a loop
/// around them would overrun its budget by up to a thousand calls between two instruction
/// checks, and hold up the other calls on its worker as long. [`meter`] makes each of them check
/// the budget, and take its preemption turn, first. (The pattern functions also check as they
/// go, see `patterns`.)
const METERED: &[(&str, &str)] = &[
    ("", "load"),
    ("", "tostring"),
    ("string", "rep"),
    ("string", "reverse"),
    ("string", "upper"),
    ("string", "lower"),
    ("string", "byte"),
    ("string", "char"),
    ("string", "format"),
    ("string", "pack"),
    ("string", "find"),
    ("string", "match"),
    ("string", "gmatch"),
    ("string", "gsub"),
    ("string", "unpack"),
    ("table", "sort"),
    ("table", "concat"),
    ("table", "unpack"),
    ("table", "move"),
    ("table", "insert"),
    ("table", "remove"),
    ("utf8", "char"),
    ("utf8", "len"),
    ("utf8", "codepoint"),
    ("json", "encode"),
    ("json", "decode"),
    ("store", "get"),
    ("store", "set"),
];

/// Make every [`METERED`] function check the budget before it runs, and yield there when the
/// hook's turn is over (where the coroutine can yield). Call after the namespaces are registered
/// and before the built-ins are made read-only.
pub fn meter(lua: &Lua) -> mlua::Result<()> {
    // The original runs under (catch-proof) `pcall` so that an error it raises can be told the
    // function's name and the script's line, as it would be if the script called it directly.
    let wrap: Function = lua
        .load(
            r#"local turn, f, name, pcall, fix = ...
            local yield, isyieldable, error = coroutine.yield, coroutine.isyieldable, error
            local function finish(ok, ...)
              if ok then return ... end
              error(fix(name, (...)), 0)
            end
            return function(...)
              if turn() and isyieldable() then yield() end
              return finish(pcall(f, ...))
            end"#,
        )
        .set_name("=luastrip")
        .into_function()?;
    // Raises when the budget is spent; true when the hook should let the others run now.
    let turn = lua.create_function(|lua, ()| {
        check(lua)?;
        Ok(current(lua).is_some_and(|b| b.preempt(lua)))
    })?;
    // An error message as Lua would have written it: "script.lua:3: bad argument #1 to 'rep'".
    let fix = lua.create_function(|lua, (name, e): (String, Value)| {
        let Value::String(msg) = &e else {
            return Ok(e);
        };
        let mut msg = msg
            .to_string_lossy()
            .replacen("to '?'", &format!("to '{name}'"), 1);
        let positioned = msg.split_once(": ").is_some_and(|(at, _)| {
            at.rsplit_once(':').is_some_and(|(_, line)| {
                !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit())
            })
        });
        if !positioned {
            msg = format!("{}: {msg}", script_location(lua));
        }
        Ok(Value::String(lua.create_string(msg)?))
    })?;
    let pcall: Function = lua.globals().get("pcall")?;
    for (lib, name) in METERED {
        let table: mlua::Table = if lib.is_empty() {
            lua.globals()
        } else {
            match lua.globals().get::<Value>(*lib)? {
                Value::Table(t) => t,
                _ => continue,
            }
        };
        if let Value::Function(f) = table.get::<Value>(*name)? {
            let wrapped = wrap.call::<Function>((&turn, f, *name, &pcall, &fix))?;
            table.set(*name, wrapped)?;
        }
    }
    Ok(())
}

/// Fail if the running hook's budget is spent: for work done in Rust on a script's behalf (the
/// pattern functions), which the instruction hook does not see.
pub fn check(lua: &Lua) -> mlua::Result<()> {
    match current(lua) {
        Some(b) if b.exceeded() => Err(b.error(script_location(lua))),
        _ => Ok(()),
    }
}

/// `file:line` of the innermost script code on the stack (not luastrip's own wrappers).
fn script_location(lua: &Lua) -> String {
    (1..32)
        .find_map(|level| {
            lua.inspect_stack(level, |d| {
                let src = d.source();
                let file = src.short_src.as_deref().unwrap_or("?");
                let line = d.current_line()?;
                (file != "luastrip" && file != "[C]").then(|| format!("{file}:{line}"))
            })
            .flatten()
        })
        .unwrap_or_else(|| "?".into())
}

/// Marks `budget` as the VM's current one while the inner future is polled, and turns a
/// preemption into a deferred wake.
struct Budgeted<'a, F> {
    lua: &'a Lua,
    budget: Arc<Budget>,
    relay: Arc<Relay>,
    /// When the hook was preempted; the time until the next poll is not charged.
    parked: Option<Instant>,
    fut: Pin<Box<F>>,
}

/// The waker the hook's coroutine sees. mlua wakes the task at once when a coroutine yields of
/// its own accord, which would put a preempted hook straight back in front of the calls it
/// yielded to; the relay notes wakes made during the poll so that [`Budgeted`] can defer them.
/// No wake is ever dropped.
struct Relay {
    real: Mutex<Waker>,
    in_poll: AtomicBool,
    woken_in_poll: AtomicBool,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.in_poll.load(Ordering::SeqCst) {
            self.woken_in_poll.store(true, Ordering::SeqCst);
        } else {
            self.real
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .wake_by_ref();
        }
    }
}

impl<F: Future> Future for Budgeted<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Some(t) = this.parked.take() {
            this.budget.extend(t.elapsed());
        }
        {
            let mut real = this.relay.real.lock().unwrap_or_else(|e| e.into_inner());
            if !real.will_wake(cx.waker()) {
                *real = cx.waker().clone();
            }
        }
        *this
            .budget
            .poll_started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        this.budget.preempted.store(false, Ordering::Relaxed);
        let waker = Waker::from(this.relay.clone());
        let before = set_current(this.lua, Some(this.budget.clone()));
        this.relay.in_poll.store(true, Ordering::SeqCst);
        this.budget.begin_poll();
        let out = this.fut.as_mut().poll(&mut Context::from_waker(&waker));
        this.budget.end_poll();
        this.relay.in_poll.store(false, Ordering::SeqCst);
        set_current(this.lua, before);
        if this.relay.woken_in_poll.swap(false, Ordering::SeqCst) && out.is_pending() {
            if this.budget.preempted.load(Ordering::Relaxed) {
                // Preempted: come back after the runtime has looked for I/O, behind the calls
                // that are ready now.
                this.parked = Some(Instant::now());
                let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            } else {
                cx.waker().wake_by_ref();
            }
        }
        out
    }
}

/// Run `func(args)` as a coroutine under `limit`; it may await async API functions.
pub async fn call_async<R: FromLuaMulti>(
    lua: &Lua,
    func: &Function,
    limit: Duration,
    args: impl IntoLuaMulti,
) -> mlua::Result<R> {
    let thread = lua.create_thread(func.clone())?;
    let budget = Budget::new(limit, Some(thread.to_pointer() as usize));
    let fut = thread.into_async::<R>(args)?;
    Budgeted {
        lua,
        budget,
        relay: Arc::new(Relay {
            real: Mutex::new(Waker::noop().clone()),
            in_poll: AtomicBool::new(false),
            woken_in_poll: AtomicBool::new(false),
        }),
        parked: None,
        fut: Box::pin(fut),
    }
    .await
}

/// Run `func()` to completion without awaiting (script loading): async API calls are refused.
pub fn call_sync(lua: &Lua, func: &Function, limit: Duration) -> mlua::Result<()> {
    let thread = lua.create_thread(func.clone())?;
    let budget = Budget::new(limit, None);
    budget.begin_poll();
    let before = set_current(lua, Some(budget));
    let result = thread.resume::<()>(());
    set_current(lua, before);
    let suspended = thread.status() == ThreadStatus::Resumable;
    result?;
    if suspended {
        return Err(mlua::Error::runtime(
            "scripts cannot call docker.* or yield while they load; do it inside a hook",
        ));
    }
    Ok(())
}

/// Await `fut` from an async API function without charging the wait to the calling hook: neither
/// the time waited nor the CPU time spent polling `fut` (the daemon client's work, not the
/// script's).
pub async fn pause<F: Future>(lua: &Lua, fut: F) -> F::Output {
    let budget = current(lua);
    let t = Instant::now();
    let mut fut = std::pin::pin!(fut);
    let out = std::future::poll_fn(|cx| {
        let Some(b) = &budget else {
            return fut.as_mut().poll(cx);
        };
        let start = thread_cpu();
        let out = fut.as_mut().poll(cx);
        if let (Some(start), Some(now)) = (start, thread_cpu()) {
            b.credit(now.saturating_sub(start));
        }
        out
    })
    .await;
    if let Some(b) = budget {
        b.extend(t.elapsed());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Lua {
        let lua = Lua::new();
        install(&lua, usize::MAX).unwrap();
        lua
    }

    /// `off_cpu()` for scripts: it stands for the kernel setting the gateway's thread aside (a
    /// loaded machine), `ms` on the wall clock and none on the thread's CPU clock.
    fn give_off_cpu(lua: &Lua, ms: u64) {
        let off_cpu = lua
            .create_function(move |_, ()| {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            })
            .unwrap();
        lua.globals().set("off_cpu", off_cpu).unwrap();
    }

    #[tokio::test]
    async fn time_off_the_cpu_is_not_charged_but_running_is() {
        let lua = vm();
        // The kernel sets the gateway's thread aside mid-hook for 150 ms.
        give_off_cpu(&lua, 150);
        let hook: Function = lua
            .load(
                r#"return function(spin)
                  off_cpu()
                  local x = 0 for i = 1, 10000 do x = x + i end
                  while spin do end
                  return x
                end"#,
            )
            .eval()
            .unwrap();
        let limit = Duration::from_millis(100);
        let n = call_async::<i64>(&lua, &hook, limit, false).await.unwrap();
        assert_eq!(n, 10000 * 10001 / 2);
        // Running is charged: after the same nap, a spinning hook still ends on its budget,
        // having run (not merely waited) for it.
        let t = Instant::now();
        let e = call_async::<i64>(&lua, &hook, limit, true)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("time budget of 100 ms"), "{e}");
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        // Loading a script is timed the same way.
        let load: Function = lua.load("off_cpu() return 1").into_function().unwrap();
        call_sync(&lua, &load, limit).unwrap();
    }

    #[tokio::test]
    async fn a_hook_dropped_mid_wait_leaves_no_budget_behind() {
        let lua = vm();
        let wait = lua
            .create_async_function(|_, ()| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
            .unwrap();
        lua.globals().set("wait", wait).unwrap();
        let hook: Function = lua.load("return function() wait() end").eval().unwrap();
        let run = call_async::<()>(&lua, &hook, Duration::from_secs(1), ());
        // The client goes away: the hook's future is dropped while it waits.
        assert!(tokio::time::timeout(Duration::from_millis(20), run)
            .await
            .is_err());
        assert!(current(&lua).is_none());
    }

    #[tokio::test]
    async fn a_spinning_hook_lets_the_others_on_its_worker_run() {
        let lua = vm();
        let spin: Function = lua
            .load("return function() while true do end end")
            .eval()
            .unwrap();
        let quick: Function = lua.load("return function() return 42 end").eval().unwrap();
        let t = Instant::now();
        let spinner = call_async::<()>(&lua, &spin, Duration::from_millis(300), ());
        let other = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let n = call_async::<i64>(&lua, &quick, Duration::from_millis(50), ())
                .await
                .unwrap();
            (n, t.elapsed())
        };
        let (spun, (n, quick_done)) = tokio::join!(spinner, other);
        assert_eq!(n, 42);
        assert!(spun.is_err(), "the spinner ends on its budget");
        // The quick hook did not wait for the spinner's 300 ms.
        assert!(quick_done < Duration::from_millis(150), "{quick_done:?}");
        // Time parked is not charged: the spinner still got its whole budget of running.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn preemption_is_invisible_to_scripts() {
        let lua = vm();
        // Long computations in the hook's own coroutine and in one the script made: the
        // preemption yields of the first never reach the script; the second is never preempted.
        let hook: Function = lua
            .load(
                r#"return function()
                  local function work() local x = 0 for j = 1, 300000 do x = x + j end return x end
                  local a = work()
                  local co = coroutine.wrap(function()
                    for i = 1, 3 do work() coroutine.yield(i) end
                    return "done"
                  end)
                  local got = { co(), co(), co(), co() }
                  assert(got[1] == 1 and got[2] == 2 and got[3] == 3 and got[4] == "done",
                    table.concat(got, ","))
                  return a + work()
                end"#,
            )
            .eval()
            .unwrap();
        let n = call_async::<i64>(&lua, &hook, Duration::from_secs(20), ())
            .await
            .unwrap();
        assert_eq!(n, 2 * (300000 * 300001 / 2));
    }

    /// A preempted hook is parked in the middle of a Lua function, at whichever instruction the
    /// count hook landed on, while the other calls on its worker run on the same VM. What they
    /// do (allocate, collect garbage) must not reach the parked hook's registers: its locals, the
    /// stack top an instruction reads from the one before it (a call with `...` or a call's many
    /// results as its arguments). mlua before 0.12.1 cut a parked coroutine's stack back to its
    /// base between polls (mlua#723): the collector then cleared the parked function's live
    /// registers, and such a call read a wrong top. Scripts saw `nil` locals, a call of the wrong
    /// function (`bad argument #1 to 'coroutine.isyieldable'` from the metered built-ins'
    /// wrapper, issue 19), or a wrong value.
    #[tokio::test]
    async fn a_parked_hook_keeps_its_registers_while_others_collect_garbage() {
        let lua = vm();
        meter(&lua).unwrap();
        // Every line holds collectable values in registers, and calls with `...` and multiple
        // results (through the metered wrapper of string.rep as well); the loop body's length is
        // not a divisor of the count hook's 1000 instructions, so the yields land everywhere.
        let hook: Function = lua
            .load(
                r##"return function(n)
                  local function pass(...) return ... end
                  local total = 0
                  for i = 1, n do
                    local a, b, c = pass(i, string.rep("x", 3), { i })
                    local d = { pass(a, b, c) }
                    total = total + select("#", pass(a, b, c)) + (a - i) + #b + (c[1] - i)
                      + (d[1] - i) + #d[2] + (d[3][1] - i)
                  end
                  return total
                end"##,
            )
            .set_name("=parked.lua")
            .eval()
            .unwrap();
        let collect: Function = lua
            .load("return function() local t = {} for i = 1, 50 do t[i] = { i } end collectgarbage() end")
            .eval()
            .unwrap();
        let n: i64 = 200_000;
        let done = AtomicBool::new(false);
        let parked = async {
            let out = call_async::<i64>(&lua, &hook, Duration::from_secs(60), n).await;
            done.store(true, Ordering::SeqCst);
            out
        };
        let others = async {
            let mut runs = 0;
            while !done.load(Ordering::SeqCst) {
                call_async::<()>(&lua, &collect, Duration::from_secs(5), ())
                    .await
                    .unwrap();
                runs += 1;
                tokio::task::yield_now().await;
            }
            runs
        };
        let (out, runs) = tokio::join!(parked, others);
        assert_eq!(out.unwrap(), n * 9);
        // The hook was parked and the others ran while it was (else this proves nothing).
        assert!(
            runs > 20,
            "only {runs} collections ran beside the parked hook"
        );
    }

    #[tokio::test]
    async fn a_hook_holding_half_the_vm_is_not_ended_for_time_off_the_cpu() {
        let lua = Lua::new();
        install(&lua, 8 << 20).unwrap();
        lua.set_memory_limit(8 << 20).unwrap();
        // The kernel sets the thread aside for 50 ms, past HOG_GRACE.
        give_off_cpu(&lua, 50);
        let hog: Function = lua
            .load(
                r#"return function()
                  local t = {} for i = 1, 5 do t[i] = string.rep("x", 1 << 20) end
                  for i = 1, 3000 do end -- long enough to be seen holding it
                  off_cpu()
                  local x = 0 for i = 1, 2000 do x = x + i end
                  return x
                end"#,
            )
            .eval()
            .unwrap();
        let thread = lua.create_thread(hog).unwrap();
        let budget = Budget::new(Duration::from_secs(20), Some(thread.to_pointer() as usize));
        set_current(&lua, Some(budget.clone()));
        *budget.poll_started.lock().unwrap() = Instant::now() - SLICE * 10;
        assert_eq!(thread.resume::<i64>(()).unwrap(), 2000 * 2001 / 2);
        assert!(budget.hog.lock().unwrap().since.is_some(), "it was a hog");
        set_current(&lua, None);
    }

    #[tokio::test]
    async fn a_hook_holding_half_the_vm_is_never_parked_and_soon_ended() {
        let lua = Lua::new();
        install(&lua, 8 << 20).unwrap();
        lua.set_memory_limit(8 << 20).unwrap();
        // Holds 5 MB of the 8, then spins: it is never parked, and ends after HOG_GRACE.
        let hog: Function = lua
            .load(
                r#"return function()
                  local t = {} for i = 1, 5 do t[i] = string.rep("x", 1 << 20) end
                  while true do end
                end"#,
            )
            .set_name("=hog.lua")
            .eval()
            .unwrap();
        let thread = lua.create_thread(hog).unwrap();
        let budget = Budget::new(Duration::from_secs(20), Some(thread.to_pointer() as usize));
        set_current(&lua, Some(budget.clone()));
        *budget.poll_started.lock().unwrap() = Instant::now() - SLICE * 10;
        let t = Instant::now();
        // Resumed plainly: a preemption would show as a yield, not an error.
        let e = thread.resume::<()>(()).unwrap_err();
        assert!(
            matches!(super::super::errors::typed(&e), Some(Error::Script { reason, .. }) if reason.contains("half of its VM's memory")),
            "{e}"
        );
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        set_current(&lua, None);
        // The same hook holding less is parked as usual.
        let light: Function = lua
            .load("return function() local s = string.rep('x', 1 << 20) while true do end end")
            .eval()
            .unwrap();
        let thread = lua.create_thread(light).unwrap();
        let budget = Budget::new(Duration::from_secs(20), Some(thread.to_pointer() as usize));
        set_current(&lua, Some(budget.clone()));
        *budget.poll_started.lock().unwrap() = Instant::now() - SLICE * 10;
        thread.resume::<()>(()).unwrap();
        assert_eq!(thread.status(), ThreadStatus::Resumable);
        set_current(&lua, None);
    }

    #[tokio::test]
    async fn a_loop_around_long_builtin_calls_overruns_little() {
        let lua = vm();
        meter(&lua).unwrap();
        for (what, code) in [
            (
                "table.sort",
                "local t = {} for i = 1, 100000 do t[i] = i end while true do table.sort(t) end",
            ),
            ("string.rep", "while true do local s = string.rep('x', 1 << 23) end"),
            (
                "table.concat",
                "local t = {} for i = 1, 100000 do t[i] = 'ab' end while true do local s = table.concat(t) end",
            ),
        ] {
            let hook: Function = lua
                .load(format!("return function() {code} end"))
                .set_name("=t.lua")
                .eval()
                .unwrap();
            let t = Instant::now();
            let e = call_async::<()>(&lua, &hook, Duration::from_millis(50), ())
                .await
                .expect_err(what);
            assert!(
                matches!(super::super::errors::typed(&e), Some(Error::Script { location, reason }) if reason.contains("time budget") && location == "t.lua:1"),
                "{what}: {e}"
            );
            assert!(t.elapsed() < Duration::from_millis(400), "{what}: {:?}", t.elapsed());
        }
    }

    #[test]
    fn metered_builtins_report_errors_as_lua_does() {
        let lua = vm();
        meter(&lua).unwrap();
        let check = |code: &str, want: &str| {
            let got: String = lua
                .load(format!(
                    "local ok, e = pcall(function()\n{code}\nend) return tostring(e)"
                ))
                .set_name("=t.lua")
                .eval()
                .unwrap();
            assert_eq!(got, want, "{code}");
        };
        check(
            "local s = string.rep()",
            "t.lua:2: bad argument #1 to 'rep' (string expected, got no value)",
        );
        check(
            "local s = table.concat({{}})",
            "t.lua:2: invalid value (table) at index 1 in table for 'concat'",
        );
        check(
            "local s = string.gsub('ab', 'a', function() error('boom') end)",
            "t.lua:2: boom",
        );
        check(
            "error(setmetatable({}, {__tostring = function() return 'obj' end}))",
            "obj",
        );
        let n: i64 = lua
            .load("return select(2, string.gsub('aXbX', 'X', '')) + #string.rep('ab', 3, ',')")
            .eval()
            .unwrap();
        assert_eq!(n, 2 + 8);
    }

    #[tokio::test]
    async fn no_script_escapes_its_budget() {
        let lua = vm();
        for (what, code) in [
            ("plain loop", "return function() while true do end end"),
            (
                "pcall in a loop",
                "return function() while true do pcall(function() while true do end end) end end",
            ),
            (
                "xpcall in a loop",
                "return function() while true do xpcall(function() while true do end end, function(e) return e end) end end",
            ),
            (
                "coroutine.wrap",
                "return function() coroutine.wrap(function() while true do end end)() end",
            ),
            (
                "coroutine.resume in a loop",
                "return function() while true do coroutine.resume(coroutine.create(function() while true do end end)) end end",
            ),
            (
                "pcall of coroutine.wrap",
                "return function() while true do pcall(coroutine.wrap(function() while true do end end)) end end",
            ),
        ] {
            let hook: Function = lua.load(code).eval().unwrap();
            let t = Instant::now();
            let out = tokio::time::timeout(
                Duration::from_secs(5),
                call_async::<()>(&lua, &hook, Duration::from_millis(50), ()),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: still running after 5 s"));
            let e = out.expect_err(what);
            assert!(
                matches!(super::super::errors::typed(&e), Some(Error::Script { reason, .. }) if reason.contains("time budget")),
                "{what}: {e}"
            );
            // It names the script's line, never luastrip's own wrappers.
            assert!(
                matches!(super::super::errors::typed(&e), Some(Error::Script { location, .. }) if !location.starts_with("luastrip")),
                "{what}: {e}"
            );
            assert!(t.elapsed() < Duration::from_millis(500), "{what}: {:?}", t.elapsed());
        }
        // An ordinary error is still caught as usual.
        let hook: Function = lua
            .load(
                "return function() local ok, e = pcall(error, 'x') assert(not ok and e == 'x') end",
            )
            .eval()
            .unwrap();
        call_async::<()>(&lua, &hook, Duration::from_millis(50), ())
            .await
            .unwrap();
    }
}
