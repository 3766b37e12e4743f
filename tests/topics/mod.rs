mod api;
mod cli;
mod converge;
mod git;
mod healing;
mod outage;
mod ownership;
mod resilience;
