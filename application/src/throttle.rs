//! Login throttling: after [`MAX_FAILURES`] failed logins within [`WINDOW`], for one username
//! or from one client address, further logins for it are refused (even with the right
//! password) for a lockout that starts at [`FIRST_LOCKOUT`] and doubles with each lockout up
//! to [`MAX_LOCKOUT`]. A success forgets the username's failures.
//!
//! For a key that has failed lately (or been locked out before), an attempt counts as a
//! failure from the moment it starts until it succeeds, so a burst of concurrent guesses
//! cannot all slip in before the first of them has failed; a key with a clean record may run
//! any number of logins at once (a script's, say). Memory is bounded: at most
//! [`MAX_TRACKED`] keys per kind, the stalest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use rmm_domain::Timestamp;

/// Failed logins within [`WINDOW`] that lock a username or an address.
pub const MAX_FAILURES: usize = 5;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first lockout; each further one doubles, up to [`MAX_LOCKOUT`].
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(60);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// A key quiet for this long after its last failure or lockout is forgotten, lockouts too.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Keys tracked per kind (usernames, addresses).
const MAX_TRACKED: usize = 65_536;

/// What one username or address has done lately.
#[derive(Debug)]
struct Record {
    /// Attempts within the window, oldest first: when each started, and whether it failed
    /// (else it is still running).
    attempts: VecDeque<(Timestamp, bool)>,
    locked_until: Option<Timestamp>,
    /// Lockouts so far: the next lasts `FIRST_LOCKOUT * 2^lockouts`.
    lockouts: u32,
    last_seen: Timestamp,
}

impl Record {
    fn new(now: Timestamp) -> Self {
        Self {
            attempts: VecDeque::new(),
            locked_until: None,
            lockouts: 0,
            last_seen: now,
        }
    }

    fn locked(&self, now: Timestamp) -> Option<Duration> {
        self.locked_until
            .filter(|&until| until > now)
            .map(|until| until.since(now))
    }

    fn prune(&mut self, now: Timestamp) {
        while self
            .attempts
            .front()
            .is_some_and(|&(t, _)| now.since(t) >= WINDOW)
        {
            self.attempts.pop_front();
        }
    }

    fn stale(&self, now: Timestamp) -> bool {
        self.locked(now).is_none() && now.since(self.last_seen) >= FORGET_AFTER
    }

    /// Records that the attempt begun at `started` failed; locks when that makes too many.
    fn fail(&mut self, started: Timestamp, now: Timestamp) {
        self.last_seen = now;
        if let Some(entry) = self
            .attempts
            .iter_mut()
            .find(|(t, failed)| *t == started && !failed)
        {
            entry.1 = true;
        }
        self.prune(now);
        if self.attempts.iter().filter(|(_, failed)| *failed).count() >= MAX_FAILURES {
            let factor = 1u32.checked_shl(self.lockouts).unwrap_or(u32::MAX);
            let lockout = FIRST_LOCKOUT.saturating_mul(factor).min(MAX_LOCKOUT);
            self.locked_until = Some(now.plus(lockout));
            self.lockouts = self.lockouts.saturating_add(1);
            self.attempts.retain(|(_, failed)| !failed);
            // Quiet is counted from the lockout's end.
            self.last_seen = now.plus(lockout);
        }
    }

    fn forget_attempt(&mut self, started: Timestamp) {
        if let Some(i) = self
            .attempts
            .iter()
            .position(|&(t, failed)| t == started && !failed)
        {
            self.attempts.remove(i);
        }
    }
}

/// Records of one kind of key, bounded in number.
#[derive(Debug)]
struct Records<K>(HashMap<K, Record>);

impl<K> Default for Records<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Hash + Eq + Clone> Records<K> {
    /// Whether `key` is locked out now (and for how long), or a new attempt would be one too
    /// many in the window.
    fn refused(&mut self, key: &K, now: Timestamp) -> Option<Duration> {
        let record = self.0.get_mut(key)?;
        if let Some(left) = record.locked(now) {
            return Some(left);
        }
        record.prune(now);
        let failed = record.attempts.iter().filter(|(_, failed)| *failed).count();
        let suspect = failed > 0 || record.lockouts > 0;
        if suspect && record.attempts.len() >= MAX_FAILURES {
            // A key that has failed lately: attempts still running count as failures, so a
            // burst cannot slip past. Retry when the oldest leaves the window.
            return record.attempts.front().map(|&(t, _)| {
                WINDOW
                    .saturating_sub(now.since(t))
                    .max(Duration::from_secs(1))
            });
        }
        None
    }

    fn begin(&mut self, key: K, now: Timestamp) {
        if !self.0.contains_key(&key) && self.0.len() >= MAX_TRACKED {
            self.make_room(now);
            if self.0.len() >= MAX_TRACKED {
                // Every tracked key is locked out: this one goes untracked.
                return;
            }
        }
        let record = self.0.entry(key).or_insert_with(|| Record::new(now));
        record.last_seen = now;
        record.attempts.push_back((now, false));
    }

    /// Forgets stale keys, or, when none is stale, the one seen longest ago.
    fn make_room(&mut self, now: Timestamp) {
        self.0.retain(|_, r| !r.stale(now));
        if self.0.len() >= MAX_TRACKED
            && let Some(oldest) = self
                .0
                .iter()
                .filter(|(_, r)| r.locked(now).is_none())
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(k, _)| k.clone())
        {
            self.0.remove(&oldest);
        }
    }
}

/// The throttle's state: one record per username and per client address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    users: Records<String>,
    addresses: Records<IpAddr>,
}

/// One login attempt admitted by [`LoginThrottle::begin`]: report how it ended.
#[derive(Debug, Clone)]
pub struct Attempt {
    username: Option<String>,
    address: Option<IpAddr>,
    started: Timestamp,
}

/// The key of a client address: IPv6 clients by their /64 (one site or host usually holds a
/// whole /64), IPv4 by the address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        IpAddr::V4(_) => ip,
    }
}

impl LoginThrottle {
    /// Admits a login attempt for `username` (`None`: not a possible username) from `address`,
    /// or says how long until one would be.
    ///
    /// # Errors
    /// The time left when the username or the address is locked out.
    pub fn begin(
        &self,
        username: Option<&str>,
        address: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Attempt, Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let address = address.map(address_key);
        let refused_user = username.and_then(|u| state.users.refused(&u.to_owned(), now));
        let refused_address = address.and_then(|a| state.addresses.refused(&a, now));
        if let Some(left) = refused_user.max(refused_address) {
            return Err(left);
        }
        if let Some(u) = username {
            state.users.begin(u.to_owned(), now);
        }
        if let Some(a) = address {
            state.addresses.begin(a, now);
        }
        Ok(Attempt {
            username: username.map(str::to_owned),
            address,
            started: now,
        })
    }

    /// The attempt failed (wrong password or unknown user).
    pub fn failed(&self, attempt: &Attempt, now: Timestamp) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = attempt
            .username
            .as_ref()
            .and_then(|u| state.users.0.get_mut(u))
        {
            record.fail(attempt.started, now);
        }
        if let Some(record) = attempt.address.and_then(|a| state.addresses.0.get_mut(&a)) {
            record.fail(attempt.started, now);
        }
    }

    /// The attempt succeeded: the username's failures and lockouts are forgotten, and the
    /// attempt no longer counts against the address.
    pub fn succeeded(&self, attempt: &Attempt) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = &attempt.username {
            state.users.0.remove(u);
        }
        forget_address_attempt(&mut state, attempt);
    }

    /// The attempt was not decided (the password could not be checked now): it counts
    /// against nobody.
    pub fn abandoned(&self, attempt: &Attempt) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = attempt
            .username
            .as_ref()
            .and_then(|u| state.users.0.get_mut(u))
        {
            record.forget_attempt(attempt.started);
        }
        forget_address_attempt(&mut state, attempt);
    }
}

fn forget_address_attempt(state: &mut State, attempt: &Attempt) {
    if let Some(record) = attempt.address.and_then(|a| state.addresses.0.get_mut(&a)) {
        record.forget_attempt(attempt.started);
    }
}

#[cfg(test)]
mod tests;
