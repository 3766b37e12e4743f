mod api;
mod build;
mod cli;
mod converge;
mod healing;
mod outage;
mod ownership;
mod resilience;
