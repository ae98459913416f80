// SPDX-License-Identifier: GPL-2.0
/*
 * system_stats: the record of one process (which /proc/mem_watch prints
 * too) and /proc/mem_stats_all, the records of every user process.
 *
 * The per-process figures come from tamalloc_read_mem_stats() of the
 * tamalloc series, the code behind get_mem_stats(), so that they and the
 * OOM score are exactly the syscall's and /proc's; which processes a
 * reader sees follows the hidepid= option and pid namespace of the procfs
 * mount the file is read through, as /proc/PID does.  The module needs a
 * kernel with that series.
 */

#include <linux/err.h>
#include <linux/kernel.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/tamalloc.h>
#include <linux/threads.h>
#include <linux/types.h>

#include "system_stats.h"

/* ------------------------------------------------------------------ */
/* One process                                                         */
/* ------------------------------------------------------------------ */

/*
 * The process of @task (a thread-group leader, referenced by the caller)
 * as get_mem_stats() reports it, numbered in @ns.  Returns false if it is
 * hidden from the reader by the hidepid= option of the procfs mount
 * @fs_info, or has been reaped; *@has_mm says whether it has memory (not a
 * kernel thread, not a process whose threads have all exited).
 */
bool sstat_proc_fill(struct task_struct *task, struct proc_fs_info *fs_info,
		     struct tamalloc_mem_stats *r, bool *has_mm)
{
	int err;

	/* What /proc/PID/status shows to this reader through this mount. */
	if (!has_pid_permissions(fs_info, task, HIDEPID_NO_ACCESS))
		return false;
	err = tamalloc_read_mem_stats(task, fs_info->pid_ns, r);
	*has_mm = !err;
	return err != -ESRCH;
}

/*
 * Length of the UTF-8 sequence at @s in *@len.  Returns false for an
 * ill-formed sequence; *@len is then the length of its maximal subpart
 * (Unicode 15, section 3.9), which is replaced by one U+FFFD, as Python's
 * bytes.decode("utf-8", "replace") does.  Stops at the terminating NUL.
 */
static bool sstat_utf8_seq(const unsigned char *s, unsigned int *len)
{
	unsigned char lo = 0x80, hi = 0xbf;
	unsigned int need, i;
	unsigned char c = s[0];

	if (c < 0x80) {
		*len = 1;
		return true;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		*len = 1;
		return false;
	}

	for (i = 1; i <= need; i++) {
		if (s[i] < lo || s[i] > hi) {
			*len = i;
			return false;
		}
		lo = 0x80;
		hi = 0xbf;
	}
	*len = need + 1;
	return true;
}

/* Prints @str as a JSON string. */
static void sstat_json_str(struct seq_file *m, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	unsigned int len;

	seq_putc(m, '"');
	while (*s) {
		if (!sstat_utf8_seq(s, &len)) {
			seq_puts(m, "\\ufffd");
		} else if (len > 1) {
			seq_write(m, s, len);
		} else {
			switch (*s) {
			case '"':
				seq_puts(m, "\\\"");
				break;
			case '\\':
				seq_puts(m, "\\\\");
				break;
			case '\b':
				seq_puts(m, "\\b");
				break;
			case '\f':
				seq_puts(m, "\\f");
				break;
			case '\n':
				seq_puts(m, "\\n");
				break;
			case '\r':
				seq_puts(m, "\\r");
				break;
			case '\t':
				seq_puts(m, "\\t");
				break;
			default:
				if (*s < 0x20 || *s == 0x7f)
					seq_printf(m, "\\u%04x", *s);
				else
					seq_putc(m, *s);
			}
		}
		s += len;
	}
	seq_putc(m, '"');
}

void sstat_proc_json(struct seq_file *m, const struct tamalloc_mem_stats *r)
{
	seq_printf(m, "{\"pid\": %d, \"name\": ", r->pid);
	sstat_json_str(m, r->comm);
	seq_printf(m, ", \"vm_size_kb\": %llu, \"vm_rss_kb\": %llu, ",
		   r->reserved_kb, r->committed_kb);
	seq_printf(m, "\"oom_score\": %d, \"oom_score_adj\": %d}",
		   r->oom_score, r->oom_score_adj);
}

/* ------------------------------------------------------------------ */
/* /proc/mem_stats_all                                                 */
/* ------------------------------------------------------------------ */

/*
 * Positions: 0 is the header, tgid + 1 is the process tgid (as in
 * proc_pid_readdir(), so a read resumes at the next pid even when
 * processes come and go), SSTAT_ALL_POS_END is the trailer with the totals.
 */
#define SSTAT_ALL_POS_END	((loff_t)PID_MAX_LIMIT + 2)
#define SSTAT_ALL_HEADER	((void *)1)
#define SSTAT_ALL_TRAILER	((void *)2)

struct sstat_all {
	struct proc_fs_info *fs_info;	/* of the mount it is read through */
	unsigned int tgid;		/* of the current record */
	bool shown;			/* rec is the current record */
	struct tamalloc_mem_stats rec;
	/* Totals of the records emitted so far (accounted in ->next()). */
	u64 processes;
	u64 vm_size_kb;
	u64 vm_rss_kb;
};

/*
 * Finds the first user process whose tgid in the mount's pid namespace
 * is at least *pos - 1, as next_tgid() of fs/proc/base.c does: look the
 * pid up under RCU, take a reference to the task, drop RCU.
 */
static void *sstat_all_find(struct sstat_all *st, loff_t *pos)
{
	struct task_struct *task = NULL;
	unsigned int tgid = *pos - 1;
	struct pid *pid;

	rcu_read_lock();
	for (;;) {
		pid = find_ge_pid(tgid, st->fs_info->pid_ns);
		if (!pid)
			break;
		tgid = pid_nr_ns(pid, st->fs_info->pid_ns);
		task = pid_task(pid, PIDTYPE_TGID);
		if (task && !(task->flags & PF_KTHREAD)) {
			get_task_struct(task);
			break;
		}
		task = NULL;
		tgid++;
	}
	rcu_read_unlock();

	if (!task) {
		*pos = SSTAT_ALL_POS_END;
		return SSTAT_ALL_TRAILER;
	}
	st->tgid = tgid;
	*pos = (loff_t)tgid + 1;
	return task;
}

static void *sstat_all_start(struct seq_file *m, loff_t *pos)
{
	struct sstat_all *st = m->private;

	st->shown = false;
	if (*pos == 0) {
		st->processes = 0;
		st->vm_size_kb = 0;
		st->vm_rss_kb = 0;
		return SSTAT_ALL_HEADER;
	}
	if (*pos < SSTAT_ALL_POS_END)
		return sstat_all_find(st, pos);
	if (*pos == SSTAT_ALL_POS_END)
		return SSTAT_ALL_TRAILER;
	return NULL;
}

/*
 * seq_file calls ->next() exactly once for each record that went into the
 * output; a record that did not fit is shown again later without ->next()
 * in between.  So the totals are accumulated here, not in ->show().
 */
static void *sstat_all_next(struct seq_file *m, void *v, loff_t *pos)
{
	struct sstat_all *st = m->private;

	if (v == SSTAT_ALL_TRAILER) {
		*pos = SSTAT_ALL_POS_END + 1;
		return NULL;
	}
	if (v == SSTAT_ALL_HEADER) {
		*pos = 1;
	} else {
		if (st->shown) {
			/*
			 * Any user can map 64 PiB (2^46 kB, la57) with
			 * MAP_NORESERVE; 2^22 processes of that wrap a u64.
			 */
			st->processes++;
			st->vm_size_kb = sstat_add_sat(st->vm_size_kb,
						       st->rec.reserved_kb);
			st->vm_rss_kb = sstat_add_sat(st->vm_rss_kb,
						      st->rec.committed_kb);
		}
		put_task_struct(v);
		*pos = (loff_t)st->tgid + 2;
	}
	st->shown = false;
	return sstat_all_find(st, pos);
}

static void sstat_all_stop(struct seq_file *m, void *v)
{
	if (v && v != SSTAT_ALL_HEADER && v != SSTAT_ALL_TRAILER)
		put_task_struct(v);
}

static int sstat_all_show(struct seq_file *m, void *v)
{
	struct sstat_all *st = m->private;
	bool has_mm;

	if (v == SSTAT_ALL_HEADER) {
		seq_puts(m, "{\"processes\": [\n");
		return 0;
	}
	if (v == SSTAT_ALL_TRAILER) {
		seq_printf(m, "%s], \"totals\": {\"processes\": %llu, ",
			   st->processes ? "\n" : "", st->processes);
		seq_printf(m, "\"vm_size_kb\": %llu, \"vm_rss_kb\": %llu}}\n",
			   st->vm_size_kb, st->vm_rss_kb);
		return 0;
	}

	/* Hidden from this reader, or exited (zombie, reaped) since found. */
	if (!sstat_proc_fill(v, st->fs_info, &st->rec, &has_mm) || !has_mm)
		return SEQ_SKIP;
	if (st->processes)
		seq_puts(m, ",\n");
	sstat_proc_json(m, &st->rec);
	st->shown = true;
	return 0;
}

static const struct seq_operations sstat_all_seq_ops = {
	.start	= sstat_all_start,
	.next	= sstat_all_next,
	.stop	= sstat_all_stop,
	.show	= sstat_all_show,
};

/*
 * The procfs mount's info lives as long as its superblock, which the open
 * file pins, so neither it nor its pid namespace needs a reference.
 */
static int sstat_all_open(struct inode *inode, struct file *file)
{
	struct sstat_all *st;

	st = __seq_open_private(file, &sstat_all_seq_ops, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->fs_info = proc_sb_info(inode->i_sb);
	return 0;
}

const struct proc_ops sstat_all_ops = {
	.proc_open	= sstat_all_open,
	.proc_read_iter	= seq_read_iter,
	.proc_lseek	= seq_lseek,
	.proc_release	= seq_release_private,
};
