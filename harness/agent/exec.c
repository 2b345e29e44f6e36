/*
 * EXEC_TEST: run a program of the initramfs (a kernel selftest, page-types)
 * to its end or a time limit, and report how it ended and its output.
 *
 * The program runs in a session and process group of its own, in its own
 * directory (run_vmtests.sh runs the selftests from theirs, and
 * ksm_functional_tests execs "./ksm_functional_tests"),
 * with stdin /dev/null, stdout and stderr one pipe, and no other descriptor
 * of the agent (the agent's port must not leak into it).  When it ends, or
 * the time is up, its whole process group is killed: a child the test left
 * behind would otherwise hold the pipe open (and run on into the next test).
 * Those children are reparented to init, which is this agent, so they are
 * reaped here by process group, never by pid -1: init's named processes are
 * in init's own group and are reaped only by procs.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define EXEC_ARGS_MAX 32
#define EXEC_ARG_LEN 4096

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Close every descriptor from 4 up (close_range(2) is 5.9+; else one by one). */
static void close_from_4(void)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 4U, ~0U, 0U) == 0)
		return;
#endif
	for (int fd = 4; fd < 1024; fd++)
		close(fd);
}

/* In the child: never returns; an exec failure's errno goes to status_fd. */
static void run_child(const char *path, char **argv, int out_fd, int status_fd)
{
	static char *const envp[] = { "PATH=/selftests:/", "HOME=/tmp", "LANG=C", NULL };
	int err, null_fd;

	setsid();
	null_fd = open("/dev/null", O_RDONLY);
	if (null_fd >= 0)
		dup2(null_fd, 0);
	else
		close(0);
	dup2(out_fd, 1);
	dup2(out_fd, 2);
	/* status_fd (close-on-exec) becomes 3; everything above it goes. */
	dup2(status_fd, 3);
	close_from_4();
	fcntl(3, F_SETFD, FD_CLOEXEC);
	signal(SIGPIPE, SIG_DFL);
	{
		char dir[EXEC_ARG_LEN];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", path);
		slash = strrchr(dir, '/');
		if (slash != NULL && slash != dir)
			*slash = 0;
		else
			snprintf(dir, sizeof(dir), "/");
		if (chdir(dir) != 0)
			(void)!chdir("/");
	}
	execve(path, argv, envp);
	err = errno;
	(void)!write(3, &err, sizeof(err));
	_exit(127);
}

/* Kill what is left of the group and reap it (the leader too, if still there). */
static void end_group(pid_t pgid)
{
	int status;

	kill(-pgid, SIGKILL);
	while (waitpid(-pgid, &status, WNOHANG) > 0)
		;
}

void op_exec_test(struct request *req, struct reply *rep)
{
	char path[EXEC_ARG_LEN];
	static char args[EXEC_ARGS_MAX][EXEC_ARG_LEN];
	char *argv[EXEC_ARGS_MAX + 1];
	uint32_t argc, timeout_ms, output_max, i;
	int out_pipe[2], status_pipe[2], status = 0, exec_errno = 0, timed_out = 0, ended = 0;
	int truncated = 0;
	uint64_t started, deadline;
	struct buf output;
	pid_t pid;

	get_cstr(&req->args, path, sizeof(path), 0);
	argc = get_u32(&req->args);
	if (argc > EXEC_ARGS_MAX) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "exec_test: %u arguments (at most %d)", argc,
			   EXEC_ARGS_MAX);
		return;
	}
	for (i = 0; i < argc; i++) {
		get_cstr(&req->args, args[i], sizeof(args[i]), 1);
		argv[i] = args[i];
	}
	argv[argc] = NULL;
	timeout_ms = get_u32(&req->args);
	output_max = get_u32(&req->args);
	if (!args_ok(req, rep))
		return;
	if (argc == 0) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "exec_test: argv is empty");
		return;
	}
	if (pipe2(out_pipe, O_CLOEXEC) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "exec_test: pipe: %s", strerror(errno));
		return;
	}
	if (pipe2(status_pipe, O_CLOEXEC) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "exec_test: pipe: %s", strerror(errno));
		close(out_pipe[0]);
		close(out_pipe[1]);
		return;
	}
	started = now_ms();
	pid = fork();
	if (pid < 0) {
		reply_fail(rep, ST_ERRNO, errno, "exec_test: fork: %s", strerror(errno));
		close(out_pipe[0]);
		close(out_pipe[1]);
		close(status_pipe[0]);
		close(status_pipe[1]);
		return;
	}
	if (pid == 0)
		run_child(path, argv, out_pipe[1], status_pipe[1]);
	close(out_pipe[1]);
	close(status_pipe[1]);
	/* The exec either happened (EOF: close-on-exec) or failed (its errno). */
	if (read(status_pipe[0], &exec_errno, sizeof(exec_errno)) != (ssize_t)sizeof(exec_errno))
		exec_errno = 0;
	close(status_pipe[0]);
	buf_init(&output);
	deadline = started + timeout_ms;
	for (;;) {
		uint8_t chunk[4096];
		struct pollfd pfd = { .fd = out_pipe[0], .events = POLLIN };
		uint64_t now = now_ms();
		ssize_t n;

		if (!ended && waitpid(pid, &status, WNOHANG) == pid) {
			ended = 1;
			deadline = now;
			/* The leader is gone: the rest of its group goes too. */
			kill(-pid, SIGKILL);
		}
		/* A process outside the group (it made a session of its own) may
		 * hold the pipe: stop reading a while after the end in any case. */
		if (ended && now >= deadline + 2000)
			break;
		if (now >= deadline && !ended) {
			timed_out = 1;
			kill(-pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			ended = 1;
			deadline = now;
		}
		if (poll(&pfd, 1, ended ? 200 : 100) <= 0) {
			if (ended)
				break; /* quiet after the end: whatever still holds the pipe is dying */
			continue;
		}
		n = read(out_pipe[0], chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (ended)
				break;
			/* EOF before the end: the program closed its output; wait for it. */
			while (now_ms() < deadline) {
				if (waitpid(pid, &status, WNOHANG) == pid) {
					ended = 1;
					deadline = now_ms();
					kill(-pid, SIGKILL);
					break;
				}
				usleep(20000);
			}
			continue;
		}
		if (output.len + (size_t)n > output_max) {
			truncated = 1;
			n = (ssize_t)(output_max - output.len);
		}
		put_raw(&output, chunk, (size_t)n);
	}
	close(out_pipe[0]);
	end_group(pid);
	if (exec_errno != 0) {
		reply_fail(rep, ST_ERRNO, exec_errno, "exec %s: %s", path, strerror(exec_errno));
		buf_free(&output);
		return;
	}
	if (output.failed) {
		reply_fail(rep, ST_ERRNO, ENOMEM, "exec_test: out of memory for the output");
		buf_free(&output);
		return;
	}
	if (WIFSIGNALED(status)) {
		put_u8(&rep->payload, EXIT_HOW_SIGNALED);
		put_u32(&rep->payload, (uint32_t)WTERMSIG(status));
	} else {
		put_u8(&rep->payload, EXIT_HOW_EXITED);
		put_u32(&rep->payload, (uint32_t)WEXITSTATUS(status));
	}
	put_u8(&rep->payload, (uint8_t)timed_out);
	put_u8(&rep->payload, (uint8_t)truncated);
	put_u64(&rep->payload, now_ms() - started);
	put_blob(&rep->payload, output.data, output.len);
	buf_free(&output);
}
