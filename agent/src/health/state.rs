//! A check's state, and how results move it: [`Tracker`], pure logic with no clock and no I/O.
//!
//! # Why rise and fall
//!
//! One slow answer, one dropped connection, must not pull a node out of every load balancer
//! and page someone: a state changes only after several results in a row agree (haproxy's
//! `rise` and `fall`, Consul's `success_before_passing` and `failures_before_critical`).
//!
//! # How
//!
//! * A result equal to the current state resets the count: the results that disagree must be
//!   consecutive.
//! * `rise` passing results in a row make the state `passing`.
//! * `fall` results in a row that are not passing (warning or critical, in any mix) and not the
//!   current state move the state to the last one's: from `passing` to `warning` or
//!   `critical`, and between those two.
//! * The first result sets the state at once, whatever rise and fall say: before it the check
//!   is `critical` (a node takes no traffic before its checks ran), and a node that starts
//!   healthy should not wait `rise` intervals for traffic.

use serde::{Deserialize, Serialize};

/// A check's state, as its tag (`health_NAME=passing`) and `rumor checks` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Passing,
    Warning,
    Critical,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Passing => "passing",
            State::Warning => "warning",
            State::Critical => "critical",
        }
    }

    /// A command's exit code, by the Nagios plugin convention Consul also follows: 0 passing,
    /// 1 warning, anything else (2 critical, 3 unknown, 126/127 cannot run, a signal)
    /// critical.
    pub fn from_exit_code(code: Option<i32>) -> State {
        match code {
            Some(0) => State::Passing,
            Some(1) => State::Warning,
            _ => State::Critical,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change: `old` is `None` for the check's first result (the agent just started it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub old: Option<State>,
    pub new: State,
}

/// One check's state and the results that disagree with it so far.
#[derive(Debug, Clone)]
pub struct Tracker {
    state: State,
    /// No result yet: the first one sets the state.
    first: bool,
    /// Consecutive results that disagree with `state`, all on the same side (passing or not).
    streak: u32,
    /// Whether the streak's results are passing ones.
    streak_passing: bool,
    rise: u32,
    fall: u32,
}

impl Tracker {
    /// A check that has not run yet: `critical` until its first result.
    pub fn new(rise: u32, fall: u32) -> Tracker {
        Tracker {
            state: State::Critical,
            first: true,
            streak: 0,
            streak_passing: false,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// A check that goes on from `state` (its settings changed on a reload): no first-result
    /// shortcut, so a reload does not flip it.
    pub fn resume(state: State, rise: u32, fall: u32) -> Tracker {
        Tracker {
            first: false,
            state,
            ..Tracker::new(rise, fall)
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Takes one result; returns the change it makes, if any.
    pub fn record(&mut self, result: State) -> Option<Change> {
        if self.first {
            self.first = false;
            self.state = result;
            return Some(Change {
                old: None,
                new: result,
            });
        }
        if result == self.state {
            self.streak = 0;
            return None;
        }
        let passing = result == State::Passing;
        if self.streak > 0 && self.streak_passing != passing {
            self.streak = 0;
        }
        self.streak += 1;
        self.streak_passing = passing;
        let needed = if passing { self.rise } else { self.fall };
        if self.streak >= needed {
            let old = self.state;
            self.state = result;
            self.streak = 0;
            return Some(Change {
                old: Some(old),
                new: result,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::State::{Critical, Passing, Warning};
    use super::*;

    /// The states after each result.
    fn run(tracker: &mut Tracker, results: &[State]) -> Vec<State> {
        results
            .iter()
            .map(|r| {
                tracker.record(*r);
                tracker.state()
            })
            .collect()
    }

    #[test]
    fn the_first_result_decides_then_rise_and_fall_apply() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.state(), Critical);
        assert_eq!(
            t.record(Passing),
            Some(Change {
                old: None,
                new: Passing
            })
        );
        assert_eq!(
            run(
                &mut t,
                &[Critical, Critical, Passing, Critical, Warning, Critical]
            ),
            [Passing, Passing, Passing, Passing, Passing, Critical],
            "three non-passing results in a row, whatever their mix; the last one's state"
        );
        assert_eq!(
            run(&mut t, &[Passing, Critical, Passing, Passing]),
            [Critical, Critical, Critical, Passing],
        );
    }

    #[test]
    fn alternating_results_never_flap() {
        let mut t = Tracker::new(2, 2);
        t.record(Passing);
        let flapping = [Critical, Passing].repeat(20);
        assert!(run(&mut t, &flapping).iter().all(|s| *s == Passing));
        let mut t = Tracker::resume(Critical, 2, 2);
        assert!(run(&mut t, &flapping).iter().all(|s| *s == Critical));
    }

    #[test]
    fn severity_moves_between_warning_and_critical_after_fall() {
        let mut t = Tracker::resume(Critical, 1, 2);
        assert_eq!(run(&mut t, &[Warning, Critical, Warning]), [Critical; 3]);
        assert_eq!(
            t.record(Warning),
            Some(Change {
                old: Some(Critical),
                new: Warning
            })
        );
        assert_eq!(run(&mut t, &[Passing]), [Passing], "rise 1");
    }

    #[test]
    fn exit_codes_follow_the_nagios_convention() {
        assert_eq!(State::from_exit_code(Some(0)), Passing);
        assert_eq!(State::from_exit_code(Some(1)), Warning);
        for code in [Some(2), Some(3), Some(127), Some(-1), None] {
            assert_eq!(State::from_exit_code(code), Critical);
        }
    }
}
