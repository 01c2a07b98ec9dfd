/**
 * ALPN names on the QUIC port.
 *
 * @module
 */

/** ALPN of server-to-server AMTP over QUIC (one bidirectional stream of BSON frames). */
export const S2S_ALPN = "amtp/1";
