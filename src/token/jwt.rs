//! Reading a DhanHQ access token (a JWT) without verifying it.
