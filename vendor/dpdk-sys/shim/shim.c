/*
 * A thin C shim over DPDK 22.11.
 *
 * DPDK's fast path (rte_eth_rx_burst, rte_eth_tx_burst, the mbuf helpers) is made of
 * `static inline` functions in headers, which no FFI can call directly; and its
 * configuration structs (rte_eth_conf, rte_eth_link, rte_eth_stats) are large,
 * version-specific layouts that are safer filled in C than mirrored by hand in Rust.
 * So this file exposes a flat API of plain integers and opaque pointers, and the Rust
 * side declares only these functions. Nothing here keeps state.
 */
#include <errno.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

int tlsa_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
int tlsa_eal_cleanup(void) { return rte_eal_cleanup(); }
int tlsa_errno(void) { return rte_errno; }
const char *tlsa_strerror(int err) { return rte_strerror(err); }
int tlsa_thread_register(void) { return rte_thread_register(); }

uint16_t tlsa_eth_dev_count_avail(void) { return rte_eth_dev_count_avail(); }

int tlsa_eth_port_by_name(const char *name, uint16_t *port_id) {
    return rte_eth_dev_get_port_by_name(name, port_id);
}

/* The first valid port id at or after `from`, or -1. */
int tlsa_eth_next_port(uint16_t from) {
    uint16_t p = rte_eth_find_next(from);
    return p >= RTE_MAX_ETHPORTS ? -1 : (int)p;
}

int tlsa_eth_port_name(uint16_t port_id, char *out, size_t len) {
    char name[RTE_ETH_NAME_MAX_LEN];
    int rc = rte_eth_dev_get_name_by_port(port_id, name);
    if (rc != 0)
        return rc;
    strncpy(out, name, len - 1);
    out[len - 1] = 0;
    return 0;
}

struct tlsa_dev_info {
    uint16_t max_rx_queues;
    uint16_t max_tx_queues;
    uint16_t mtu;
    uint16_t _pad;
    uint64_t rss_offloads;
    int32_t socket_id;
    char driver_name[64];
};

int tlsa_eth_dev_info(uint16_t port_id, struct tlsa_dev_info *out) {
    struct rte_eth_dev_info info;
    int rc = rte_eth_dev_info_get(port_id, &info);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->max_rx_queues = info.max_rx_queues;
    out->max_tx_queues = info.max_tx_queues;
    out->rss_offloads = info.flow_type_rss_offloads;
    out->socket_id = rte_eth_dev_socket_id(port_id);
    if (rte_eth_dev_get_mtu(port_id, &out->mtu) != 0)
        out->mtu = RTE_ETHER_MTU;
    if (info.driver_name)
        strncpy(out->driver_name, info.driver_name, sizeof(out->driver_name) - 1);
    return 0;
}

/* Configures `nb_q` RX and TX queue pairs; RSS on IP+TCP when the PMD offers it. */
int tlsa_eth_configure(uint16_t port_id, uint16_t nb_q, uint64_t rss_offloads) {
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    uint64_t want = RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP;
    if (nb_q > 1 && (rss_offloads & want) != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = NULL;
        conf.rx_adv_conf.rss_conf.rss_hf = rss_offloads & want;
    }
    return rte_eth_dev_configure(port_id, nb_q, nb_q, &conf);
}

int tlsa_eth_adjust_desc(uint16_t port_id, uint16_t *rx, uint16_t *tx) {
    return rte_eth_dev_adjust_nb_rx_tx_desc(port_id, rx, tx);
}

/* data_room: bytes of frame an mbuf holds after its headroom (0: DPDK's default, 2048). */
struct rte_mempool *tlsa_pktmbuf_pool_create(const char *name, unsigned n, unsigned cache,
                                             int socket_id, uint16_t data_room) {
    uint32_t size = data_room == 0 ? RTE_MBUF_DEFAULT_BUF_SIZE
                                   : (uint32_t)data_room + RTE_PKTMBUF_HEADROOM;
    if (size > UINT16_MAX)
        return NULL;
    return rte_pktmbuf_pool_create(name, n, cache, 0, (uint16_t)size, socket_id);
}

int tlsa_eth_set_mtu(uint16_t port_id, uint16_t mtu) { return rte_eth_dev_set_mtu(port_id, mtu); }

void tlsa_mempool_free(struct rte_mempool *mp) { rte_mempool_free(mp); }

unsigned tlsa_mempool_in_use(const struct rte_mempool *mp) {
    return rte_mempool_in_use_count(mp);
}

int tlsa_rx_queue_setup(uint16_t port_id, uint16_t q, uint16_t nb_desc, int socket_id,
                        struct rte_mempool *mp) {
    return rte_eth_rx_queue_setup(port_id, q, nb_desc, (unsigned)socket_id, NULL, mp);
}

int tlsa_tx_queue_setup(uint16_t port_id, uint16_t q, uint16_t nb_desc, int socket_id) {
    return rte_eth_tx_queue_setup(port_id, q, nb_desc, (unsigned)socket_id, NULL);
}

int tlsa_eth_start(uint16_t port_id) { return rte_eth_dev_start(port_id); }
int tlsa_eth_stop(uint16_t port_id) { return rte_eth_dev_stop(port_id); }
int tlsa_eth_close(uint16_t port_id) { return rte_eth_dev_close(port_id); }
int tlsa_eth_promiscuous(uint16_t port_id, int on) {
    return on ? rte_eth_promiscuous_enable(port_id) : rte_eth_promiscuous_disable(port_id);
}

int tlsa_eth_macaddr(uint16_t port_id, uint8_t out[6]) {
    struct rte_ether_addr a;
    int rc = rte_eth_macaddr_get(port_id, &a);
    if (rc == 0)
        memcpy(out, a.addr_bytes, 6);
    return rc;
}

int tlsa_eth_link(uint16_t port_id, uint32_t *speed_mbps, int *up) {
    struct rte_eth_link link;
    memset(&link, 0, sizeof(link));
    int rc = rte_eth_link_get_nowait(port_id, &link);
    if (rc == 0) {
        *speed_mbps = link.link_speed;
        *up = link.link_status;
    }
    return rc;
}

struct tlsa_eth_stats {
    uint64_t ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf;
};

int tlsa_eth_stats(uint16_t port_id, struct tlsa_eth_stats *out) {
    struct rte_eth_stats s;
    int rc = rte_eth_stats_get(port_id, &s);
    if (rc != 0)
        return rc;
    out->ipackets = s.ipackets;
    out->opackets = s.opackets;
    out->ibytes = s.ibytes;
    out->obytes = s.obytes;
    out->imissed = s.imissed;
    out->ierrors = s.ierrors;
    out->oerrors = s.oerrors;
    out->rx_nombuf = s.rx_nombuf;
    return 0;
}

/* ---- fast path: static inline functions made callable ---- */

uint16_t tlsa_rx_burst(uint16_t port_id, uint16_t q, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port_id, q, pkts, n);
}

uint16_t tlsa_tx_burst(uint16_t port_id, uint16_t q, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port_id, q, pkts, n);
}

struct rte_mbuf *tlsa_mbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

void tlsa_mbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

/* Data pointer and length of a single-segment mbuf; NULL when it is chained. */
uint8_t *tlsa_mbuf_data(struct rte_mbuf *m, uint32_t *len) {
    if (m->nb_segs != 1) {
        *len = m->pkt_len;
        return NULL;
    }
    *len = m->data_len;
    return rte_pktmbuf_mtod(m, uint8_t *);
}

/* Appends `len` bytes of room to an empty mbuf; NULL when it does not fit. */
uint8_t *tlsa_mbuf_append(struct rte_mbuf *m, uint16_t len) {
    return (uint8_t *)rte_pktmbuf_append(m, len);
}

/* Shrinks a single-segment mbuf to `len` bytes (len <= its data length). */
int tlsa_mbuf_trim_to(struct rte_mbuf *m, uint16_t len) {
    if (len > m->data_len)
        return -1;
    return rte_pktmbuf_trim(m, m->data_len - len);
}
