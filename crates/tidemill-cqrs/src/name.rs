//! Names of commands and events: [`Named`], and how the default is derived.

use std::borrow::Cow;

/// A command or event type with a name. The name travels in the message metadata under
/// [`NAME_KEY`](crate::NAME_KEY), picks the handler on the receiving side and, through the
/// [topic function](crate::topic), the topic.
///
/// # The default name
///
/// Without an override, the name is the type's own name without its module path:
/// [`short_type_name`] applied to [`std::any::type_name`]. `my_app::users::UserSignedUp` is
/// named `UserSignedUp`, so moving the type to another module or crate keeps its name; generic
/// arguments are shortened the same way (`Envelope<my_app::Order>` is `Envelope<Order>`).
/// Renaming the type changes the name, and with it the topic: messages already in flight under
/// the old name are no longer recognised. The standard library does not promise that
/// `type_name` stays the same across compiler versions; for a name that is part of a wire
/// contract, override it.
///
/// # Overriding
///
/// ```
/// use std::borrow::Cow;
/// use tidemill_cqrs::Named;
///
/// struct UserSignedUp;
/// impl Named for UserSignedUp {} // the default: "UserSignedUp"
///
/// struct SendNotification;
/// impl Named for SendNotification {
///     fn name() -> Cow<'static, str> {
///         Cow::Borrowed("notifications.send.v1")
///     }
/// }
///
/// assert_eq!(UserSignedUp::name(), "UserSignedUp");
/// assert_eq!(SendNotification::name(), "notifications.send.v1");
/// ```
pub trait Named {
    /// The name. Defaults to the type's name without its module path.
    fn name() -> Cow<'static, str> {
        Cow::Owned(short_type_name::<Self>())
    }
}

/// The name of type `T` as [`std::any::type_name`] gives it, with every module path removed,
/// including those of generic arguments.
///
/// ```
/// use tidemill_cqrs::name::short_type_name;
///
/// struct Order;
/// assert_eq!(short_type_name::<Order>(), "Order");
/// assert_eq!(short_type_name::<Vec<Order>>(), "Vec<Order>");
/// assert_eq!(short_type_name::<(u8, Option<String>)>(), "(u8, Option<String>)");
/// ```
pub fn short_type_name<T: ?Sized>() -> String {
    shorten(std::any::type_name::<T>())
}

fn shorten(full: &str) -> String {
    fn last_segment(path: &str) -> &str {
        path.rsplit("::").next().unwrap_or(path)
    }
    let mut out = String::with_capacity(full.len());
    let mut start = 0;
    for (i, c) in full.char_indices() {
        if matches!(
            c,
            '<' | '>' | ',' | ' ' | '(' | ')' | '[' | ']' | ';' | '&' | '*'
        ) {
            out.push_str(last_segment(&full[start..i]));
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    out.push_str(last_segment(&full[start..]));
    out
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn shortens_paths() {
        assert_eq!(shorten("a::b::C"), "C");
        assert_eq!(
            shorten("a::Env<b::X, alloc::vec::Vec<c::Y>>"),
            "Env<X, Vec<Y>>"
        );
        assert_eq!(shorten("&[a::B; 3]"), "&[B; 3]");
        assert_eq!(shorten("Plain"), "Plain");
    }
}
