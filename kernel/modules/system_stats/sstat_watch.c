// SPDX-License-Identifier: GPL-2.0
/*
 * system_stats: /proc/mem_watch, the record of the one process that a pid
 * written to the open file selects.  The record is sstat_procs.c's.
 */

#include <linux/err.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/tamalloc.h>
#include <linux/types.h>
#include <linux/uaccess.h>

#include "system_stats.h"

/* ------------------------------------------------------------------ */
/* /proc/mem_watch                                                     */
/* ------------------------------------------------------------------ */

/*
 * The selection belongs to the open file: two users who open the file
 * separately never see each other's choice.  The selected process is kept
 * as a reference to its struct pid, so a pid reused by another process
 * after the selected one exits is not picked up by mistake.
 */
struct sstat_watch {
	struct mutex lock;		/* protects pid and nr */
	struct pid *pid;		/* TGID pid of the selection, or NULL */
	pid_t nr;			/* its number in the mount's pid ns */
	struct proc_fs_info *fs_info;	/* of the mount it is read through */
};

#define SSTAT_WATCH_MAX_INPUT	32

static int sstat_watch_show(struct seq_file *m, void *v)
{
	struct sstat_watch *w = m->private;
	struct tamalloc_mem_stats r;
	struct task_struct *task;
	bool shown = false;
	bool has_mm;
	struct pid *pid;
	pid_t nr;

	mutex_lock(&w->lock);
	pid = get_pid(w->pid);
	nr = w->nr;
	mutex_unlock(&w->lock);

	if (!pid) {
		seq_puts(m, "{\"error\": \"no process selected\"}\n");
		return 0;
	}
	task = get_pid_task(pid, PIDTYPE_TGID);
	put_pid(pid);
	if (task) {
		/* Kernel threads have no memory but are shown, as in /proc. */
		shown = sstat_proc_fill(task, w->fs_info, &r, &has_mm) &&
			(has_mm || (task->flags & PF_KTHREAD));
		put_task_struct(task);
	}
	/* A process this reader may not see reads as gone, never as itself. */
	if (!shown) {
		seq_printf(m, "{\"error\": \"process exited\", \"pid\": %d}\n",
			   nr);
		return 0;
	}
	sstat_proc_json(m, &r);
	seq_putc(m, '\n');
	return 0;
}

/*
 * Writing a pid (decimal, optionally followed by a newline) selects its
 * process; a thread id selects the process the thread belongs to.  A pid
 * that the reader could not see in this /proc mount gives ESRCH, as if it
 * did not exist.  On error the previous selection stays.  The file
 * position is reset so that the next read(2) on the same descriptor shows
 * the new selection.
 */
static ssize_t sstat_watch_write(struct file *file, const char __user *ubuf,
				 size_t count, loff_t *ppos)
{
	struct seq_file *m = file->private_data;
	struct sstat_watch *w = m->private;
	struct pid_namespace *ns = w->fs_info->pid_ns;
	struct task_struct *task, *leader = NULL;
	struct pid *pid = NULL;
	struct pid *old;
	pid_t tgid;
	int nr, err;

	if (!count || count > SSTAT_WATCH_MAX_INPUT)
		return -EINVAL;
	err = kstrtoint_from_user(ubuf, count, 10, &nr);
	if (err == -EFAULT)
		return err;
	if (err || nr <= 0)
		return -EINVAL;

	/*
	 * A thread id selects its process.  The task attached to the
	 * thread-group pid is safe to pin under RCU, unlike a group_leader
	 * pointer that de_thread() may be replacing.
	 */
	rcu_read_lock();
	task = pid_task(find_pid_ns(nr, ns), PIDTYPE_PID);
	if (task)
		leader = pid_task(task_tgid(task), PIDTYPE_TGID);
	if (leader) {
		get_task_struct(leader);
		pid = get_task_pid(leader, PIDTYPE_TGID);
	}
	rcu_read_unlock();
	if (!leader)
		return -ESRCH;

	/* The permission check may sleep: outside RCU, with a reference. */
	err = -ESRCH;
	tgid = pid_nr_ns(pid, ns);
	if (!tgid || !has_pid_permissions(w->fs_info, leader, HIDEPID_NO_ACCESS))
		goto put_pid;

	mutex_lock(&w->lock);
	old = w->pid;
	w->pid = pid;
	w->nr = tgid;
	mutex_unlock(&w->lock);
	pid = old;

	*ppos = 0;
	err = count;
put_pid:
	put_pid(pid);
	put_task_struct(leader);
	return err;
}

static int sstat_watch_open(struct inode *inode, struct file *file)
{
	struct sstat_watch *w;
	int err;

	w = kzalloc(sizeof(*w), GFP_KERNEL);
	if (!w)
		return -ENOMEM;
	mutex_init(&w->lock);
	/* Pinned by the open file, as for /proc/mem_stats_all. */
	w->fs_info = proc_sb_info(inode->i_sb);

	err = single_open(file, sstat_watch_show, w);
	if (err) {
		mutex_destroy(&w->lock);
		kfree(w);
	}
	return err;
}

static int sstat_watch_release(struct inode *inode, struct file *file)
{
	struct seq_file *m = file->private_data;
	struct sstat_watch *w = m->private;
	int ret;

	ret = single_release(inode, file);
	put_pid(w->pid);
	mutex_destroy(&w->lock);
	kfree(w);
	return ret;
}

const struct proc_ops sstat_watch_ops = {
	.proc_open	= sstat_watch_open,
	.proc_read_iter	= seq_read_iter,
	.proc_write	= sstat_watch_write,
	.proc_lseek	= seq_lseek,
	.proc_release	= sstat_watch_release,
};
