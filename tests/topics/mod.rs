mod api;
mod cli;
mod converge;
mod healing;
mod outage;
mod ownership;
mod resilience;
