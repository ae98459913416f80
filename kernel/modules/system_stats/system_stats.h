/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the files of the system_stats module share: the proc_ops that
 * sstat_main.c registers, the record of one process that both process
 * files print, and the saturating sum of every counter.
 */
#ifndef SSTAT_SYSTEM_STATS_H
#define SSTAT_SYSTEM_STATS_H

#include <linux/overflow.h>
#include <linux/proc_fs.h>
#include <linux/types.h>

struct seq_file;
struct tamalloc_mem_stats;
struct task_struct;

/* @a + @b, or U64_MAX where the sum does not fit: a counter never wraps. */
static inline u64 sstat_add_sat(u64 a, u64 b)
{
	u64 sum;

	return check_add_overflow(a, b, &sum) ? U64_MAX : sum;
}

/* sstat_system.c */
extern const struct proc_ops sstat_text_ops;
extern const struct proc_ops sstat_json_ops;

/* sstat_procs.c; the record is also /proc/mem_watch's. */
extern const struct proc_ops sstat_all_ops;
bool sstat_proc_fill(struct task_struct *task, struct proc_fs_info *fs_info,
		     struct tamalloc_mem_stats *r, bool *has_mm);
void sstat_proc_json(struct seq_file *m, const struct tamalloc_mem_stats *r);

/* sstat_watch.c */
extern const struct proc_ops sstat_watch_ops;

#endif /* SSTAT_SYSTEM_STATS_H */
