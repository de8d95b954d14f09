"""mailsvc: thin SMTP/POP3/IMAP front ends that ask idsvc over its public sockets (later issues)."""
