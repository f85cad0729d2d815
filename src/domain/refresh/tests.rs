use super::*;

#[test]
fn refresh_windows_spread_over_one_margin_and_are_stable() {
    let margin = Duration::from_secs(300);
    let windows: Vec<Duration> = (0..1000)
        .map(|n| refresh_window(margin, "acme", &format!("acc_{n}"), 1_800_000_000))
        .collect();
    assert!(windows.iter().all(|w| *w >= margin && *w < margin * 2));
    let early = windows.iter().filter(|w| **w < margin + margin / 2).count();
    assert!(
        (350..650).contains(&early),
        "about half in each half of the window: {early}"
    );
    assert_eq!(
        refresh_window(margin, "acme", "acc_1", 1_800_000_000),
        refresh_window(margin, "acme", "acc_1", 1_800_000_000)
    );
}

#[test]
fn background_windows_come_before_any_call_would_refresh_and_spread_over_the_lead() {
    let (margin, lead) = (Duration::from_secs(300), Duration::from_secs(900));
    let windows: Vec<Duration> = (0..1000)
        .map(|n| ahead_window(margin, lead, "acme", &format!("acc_{n}"), 1_800_000_000))
        .collect();
    // Calls refresh within [margin, 2 × margin) of expiry: the background is always earlier.
    assert!(windows.iter().all(|w| *w >= margin * 2 && *w < margin * 2 + lead));
    let first_third = windows.iter().filter(|w| **w < margin * 2 + lead / 3).count();
    assert!((250..420).contains(&first_third), "spread evenly: {first_third}");
}

/// The scheduling policy, simulated on tokio's paused clock: rounds every
/// 5 s take the due grants, soonest expiry first, while background budget
/// (20 % of 50/s and 500/min) lasts; a refreshed token lives 3 hours.
struct Simulation {
    /// (expires_at, grant number), seconds.
    tokens: std::collections::BTreeSet<(i64, usize)>,
    budget: crate::resilience::RateBudget,
    margin: Duration,
    lead: Duration,
    /// Per refresh: (when, how long its token had left).
    refreshes: Vec<(i64, i64)>,
}

impl Simulation {
    fn new(expiries: impl Iterator<Item = i64>) -> Simulation {
        Simulation {
            tokens: expiries.enumerate().map(|(n, at)| (at, n)).collect(),
            budget: crate::resilience::RateBudget::new(crate::resilience::RateLimit {
                per_second: 10,
                per_minute: 100,
            }),
            margin: Duration::from_secs(300),
            lead: Duration::from_secs(900),
            refreshes: Vec::new(),
        }
    }

    async fn run(&mut self, seconds: i64) {
        let start = tokio::time::Instant::now();
        loop {
            let now = start.elapsed().as_secs() as i64;
            if now >= seconds {
                return;
            }
            let horizon = now + (self.margin * 2 + self.lead).as_secs() as i64;
            let due: Vec<(i64, usize)> = self
                .tokens
                .range(..(horizon + 1, 0))
                .filter(|(at, n)| {
                    let window = ahead_window(self.margin, self.lead, "acme", &format!("acc_{n}"), *at);
                    at - now <= window.as_secs() as i64
                })
                .copied()
                .collect();
            for (at, n) in due {
                if start.elapsed().as_secs() as i64 >= seconds {
                    return;
                }
                // As a background refresh does: wait for the share, up to a round.
                let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
                if self.budget.acquire(give_up).await.is_err() {
                    break;
                }
                let now = start.elapsed().as_secs() as i64;
                self.tokens.remove(&(at, n));
                self.tokens.insert((now + 3 * 3600, n));
                self.refreshes.push((now, at - now));
            }
            tokio::time::advance(Duration::from_secs(5)).await;
        }
    }

    fn busiest_minute(&self) -> usize {
        let mut per_minute = std::collections::HashMap::<i64, usize>::new();
        for (at, _) in &self.refreshes {
            *per_minute.entry(at / 60).or_default() += 1;
        }
        per_minute.into_values().max().unwrap_or_default()
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_tokens_expiring_over_three_hours_are_all_refreshed_before_the_margin() {
    // Expiring evenly beyond the refresh horizon, as they do once the
    // refresher has been running: a token lives 3 hours and is refreshed
    // 10 to 25 minutes early, so each grant comes round every 2h42m or so.
    let horizon = 2 * 300 + 900;
    let period = 3 * 3600 - (2 * 300 + 900 / 2);
    let mut simulation = Simulation::new((0..10_000).map(|n| horizon + n * period / 10_000));
    simulation.run(3 * 3600).await;
    let refreshed: std::collections::HashSet<i64> = simulation.refreshes.iter().map(|(at, _)| *at).collect();
    assert!(simulation.refreshes.len() >= 10_000, "{}", simulation.refreshes.len());
    // Before the margin, always; before the earliest point any call would
    // start a refresh (twice the margin) all but a few, caught by a round
    // that began seconds earlier.
    let late: Vec<&(i64, i64)> = simulation.refreshes.iter().filter(|(_, left)| *left < 300).collect();
    let in_call_window = simulation.refreshes.iter().filter(|(_, left)| *left < 2 * 300).count();
    assert!(
        in_call_window < 100,
        "{in_call_window} refreshed inside the calls' window"
    );
    assert!(
        late.is_empty(),
        "every token was refreshed before it entered the margin: {} late, first {:?}, busiest minute {}",
        late.len(),
        late.first(),
        simulation.busiest_minute()
    );
    // 10,000 in three hours is 56 a minute: under the background's 100.
    assert!(simulation.busiest_minute() <= 100, "{}", simulation.busiest_minute());
    assert!(refreshed.len() > 1000, "spread over the rounds, not bunched");
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_the_background_works_through_expired_tokens_within_its_share() {
    // Every token expired (calgate was down): calls refresh what they use
    // on demand; the background takes the rest, soonest expiry first, at
    // its share of the budget.
    let mut simulation = Simulation::new((0..10_000).map(|n| -3600 + n % 600));
    simulation.run(60 * 60).await;
    assert!(simulation.busiest_minute() <= 100, "{}", simulation.busiest_minute());
    let taken = simulation.refreshes.len();
    assert!(
        (5_400..=6_000).contains(&taken),
        "90 to 100 a minute for an hour: {taken}"
    );
    let lefts: Vec<i64> = simulation.refreshes.iter().map(|(_, left)| *left).collect();
    assert!(
        lefts.windows(2).all(|pair| pair[0] - 5 <= pair[1]),
        "the longest expired first"
    );
}
