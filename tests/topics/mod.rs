mod cli;
mod converge;
mod ownership;
mod resilience;
