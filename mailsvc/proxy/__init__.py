"""Proxy mode of the POP3 and IMAP listeners: everything before login is ours (CAPABILITY,
STARTTLS, limits, idsvc's verdict and penalties); after idsvc accepts a login the connection is
logged in on a configured upstream server with a master user and spliced to it byte for byte."""
