//! Native integration tests: run on the host kernel, as real processes.

mod doctor;
