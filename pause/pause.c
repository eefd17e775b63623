//go:build ignore

// The constraint above keeps the go tool from treating this file as cgo
// source of package pause; gcc sees an ordinary comment. pause.go embeds it.

/*
 * pause: the infra process of a crivm pod sandbox, after Kubernetes'
 * build/pause/linux/pause.c. It holds the pod's namespaces open by doing
 * nothing: it sleeps in pause() forever, reaps every child that is
 * reparented to it (it is PID 1 of the pod's PID namespace when the pod
 * shares one), and exits 0 on SIGTERM or SIGINT.
 *
 * Build: gcc -Os -static -o pause pause.c
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PAUSE_VERSION
#define PAUSE_VERSION "dev"
#endif

static void sigdown(int signo)
{
	/* Only async-signal-safe calls here: write(2) and _exit(2). */
	static const char msg[] = "pause: shutting down\n";
	ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)n;
	(void)signo;
	_exit(0);
}

static void sigreap(int signo)
{
	int saved = errno;
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int handle(int signo, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; ++i) {
		if (strcmp(argv[i], "-v") == 0) {
			printf("pause %s\n", PAUSE_VERSION);
			return 0;
		}
	}

	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not PID 1, orphans are not reparented to me\n");

	if (handle(SIGINT, sigdown, 0) < 0 || handle(SIGTERM, sigdown, 0) < 0) {
		perror("pause: sigaction SIGINT/SIGTERM");
		return 1;
	}
	if (handle(SIGCHLD, sigreap, SA_NOCLDSTOP | SA_RESTART) < 0) {
		perror("pause: sigaction SIGCHLD");
		return 2;
	}

	/* Reap anything that exited before the handler was installed. */
	sigreap(SIGCHLD);

	for (;;)
		pause();

	fprintf(stderr, "pause: error: infinite loop terminated\n");
	return 42;
}
