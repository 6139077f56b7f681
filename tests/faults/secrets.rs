//! Secrets and destinations: redirects, callback URLs, forged run ids,
//! redaction.
