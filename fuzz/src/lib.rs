//! What the fuzz targets and their seed recorder share: OpenSSL's randomness made a
//! function of a seed ([`det_rand`]), and the whole-engine target's server
//! ([`server`]). Test tooling only: nothing here is linked into the appliance.

pub mod det_rand;
pub mod server;
