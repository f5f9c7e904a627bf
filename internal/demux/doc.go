// Package demux routes the replies read from a mailbox's reply queue to
// the calls waiting for them.
//
// A Demux decodes each message, checks expiry, and routes the reply by
// ticket to the Inbox of the call waiting for it; replies nobody waits for
// yet are kept, bounded in count and age, for a later gather of their
// ticket. Collect turns an Inbox into a stream that ends at whichever comes
// first: the reply limit, every expected node having replied, a quiet gap,
// the deadline, or cancellation.
package demux
