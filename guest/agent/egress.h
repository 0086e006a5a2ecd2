/* The guest end of egress (docs/protocol.md, "Egress tunnels"): an HTTP proxy on the guest's
 * loopback, each of whose connections becomes a tunnel to the host. agent.c's poll loop
 * drives it: egress_fill adds its fds, egress_ready handles what poll reported for them. */
#ifndef VMGATE_EGRESS_H
#define VMGATE_EGRESS_H

#include <poll.h>

#include "proto.h"

#define EGRESS_MAX_TUNNELS 64 /* at once; beyond that a client is answered 503 */
#define EGRESS_SLOTS (EGRESS_MAX_TUNNELS + 16) /* and some for answers still being written */
#define EGRESS_MAX_FDS (1 + EGRESS_SLOTS)      /* the listener and one socket per slot */

/* EGRESS and the tunnel messages from the host (decoded and checked by proto_decode). */
void egress_message(const struct proto_msg *m);
/* Writes up to EGRESS_MAX_FDS entries into pfd; returns how many. */
int egress_fill(struct pollfd *pfd);
/* Handles poll's answer for the n entries egress_fill wrote. */
void egress_ready(const struct pollfd *pfd, int n);
/* The host connection ended: close the listener and every tunnel. */
void egress_disconnected(void);

#endif
