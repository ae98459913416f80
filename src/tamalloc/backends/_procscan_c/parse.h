/* parse.c: a /proc file read whole, and the fields of a status. */
#ifndef PROCSCAN_PARSE_H
#define PROCSCAN_PARSE_H

#include "procscan.h"

#pragma GCC visibility push(hidden)
int ps_read_whole(int fd, struct buffer *buf, size_t *len);
int ps_parse_long(const struct buffer *buf, long *value);
void ps_parse_name(const char *status, struct record *rec);
int ps_parse_memory(const char *status, struct record *rec);
long ps_parse_threads(const char *status);
#pragma GCC visibility pop

#endif
