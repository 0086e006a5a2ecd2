/* What agent.c shares with the other parts of the agent (egress.c): sending frames to the
 * host and saying things on the console. One thread: none of this is locked. */
#ifndef VMGATE_AGENT_H
#define VMGATE_AGENT_H

#include <stdint.h>

#include "proto.h"

/* A frame in the agent's one output buffer: fill it, then send it before beginning another. */
struct proto_out begin(uint8_t type, uint32_t id);
/* Writes the frame to the host (blocking: the host always drains the port). */
void send_frame(struct proto_out *o);
__attribute__((format(printf, 3, 4))) void send_error(uint32_t id, uint32_t code, const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void say(const char *fmt, ...);

#endif
