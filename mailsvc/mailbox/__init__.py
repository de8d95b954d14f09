"""The mailbox layer POP3, IMAP and SMTP delivery share, on the Maildir store
(:mod:`mailsvc.maildir`): folder names (:mod:`.names`), persistent UIDs (:mod:`.uidlist`), flags
and keywords (:mod:`.flags`), MIME structure on raw bytes (:mod:`.mime`), one folder's shared
index (:mod:`.folder`) and one user's folders (:mod:`.account`)."""
